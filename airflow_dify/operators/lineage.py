"""Where the answers land, named for Airflow Assets and OpenLineage.

The batch operator writes its results back into the prompts table, so one :class:`TableRef` names
both the input and the output. The Asset URI follows the AIP-60 forms Airflow's own providers use
(``postgres://host:port/database/schema/table``) so a consumer DAG can declare the same URI by
hand; :func:`dify_answers_asset` builds it from a connection id for DAGs that prefer not to.

OpenLineage is optional: nothing here imports it at module level, and :func:`operator_lineage`
returns ``None`` when the openlineage provider is not installed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Asset

log = logging.getLogger(__name__)

#: Default PostgreSQL schema when ``table`` has none (the usual ``search_path`` head).
POSTGRES_DEFAULT_SCHEMA = "public"
_SCHEMES = {"postgresql": "postgres"}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
#: Key of the run facet carrying the batch summary.
RUN_FACET_NAME = "difyBatch"


@dataclass(frozen=True)
class TableRef:
    """A table located well enough to name it: ``scheme://authority/database/schema/table``."""

    scheme: str
    authority: str  # host:port; empty for file databases
    database: str  # database name; for SQLite the absolute file path
    schema: str | None
    table: str

    @property
    def asset_uri(self) -> str:
        if self.scheme == "sqlite":
            return f"sqlite://{self.database}/{self.table}"
        parts = [p for p in (self.database, self.schema, self.table) if p]
        return f"{self.scheme}://{self.authority}/{'/'.join(parts)}"

    @property
    def ol_namespace(self) -> str:
        if self.scheme == "sqlite":
            return f"sqlite://{self.database}"
        return f"{self.scheme}://{self.authority}"

    @property
    def ol_name(self) -> str:
        if self.scheme == "sqlite":
            return self.table
        return ".".join(p for p in (self.database, self.schema, self.table) if p)


def table_ref(connection: Any, table: str) -> TableRef:
    """Locate ``table`` (``name`` or ``schema.name``) on an Airflow SQL connection."""
    conn_type = (getattr(connection, "conn_type", None) or "generic").lower()
    scheme = _SCHEMES.get(conn_type, conn_type)
    schema, _, name = table.rpartition(".")
    host = getattr(connection, "host", None) or ""
    if scheme == "sqlite":
        path = host if host.startswith("/") or host.startswith(":") else os.path.abspath(host or ":memory:")
        return TableRef("sqlite", "", path, schema or None, name)
    port = getattr(connection, "port", None) or _DEFAULT_PORTS.get(scheme)
    authority = f"{host or 'localhost'}:{port}" if port else host or "localhost"
    database = getattr(connection, "schema", None) or ""
    extra = getattr(connection, "extra_dejson", None) or {}
    database = extra.get("database") or database
    if scheme == "postgres":
        schema = schema or POSTGRES_DEFAULT_SCHEMA
    return TableRef(scheme, authority, database, schema or None, name)


def is_templated(value: str | None) -> bool:
    return value is not None and ("{{" in value or "{%" in value)


def dify_answers_asset(sql_conn_id: str, table: str) -> Asset:
    """The Asset the batch operator emits for ``table``: use it in ``schedule=[...]`` of a consumer DAG.

    Looks the connection up, so call it where connections resolve (DAG parse or task time).
    """
    from airflow.sdk import Asset, BaseHook

    return Asset(uri=table_ref(BaseHook.get_connection(sql_conn_id), table).asset_uri)


def default_outlets(sql_conn_id: str, table: str) -> list[Asset]:
    """The answers table as an outlet, or ``[]`` (logged) when it cannot be named at parse time.

    Never raises: a DAG must still parse when its SQL connection is unreachable from the DAG
    processor; the task then runs without an asset event.
    """
    if is_templated(sql_conn_id) or is_templated(table):
        log.info("Templated sql_conn_id/table: no outlet Asset declared; pass outlets= to declare one.")
        return []
    try:
        return [dify_answers_asset(sql_conn_id, table)]
    except Exception as err:  # lookup or URI validation: lineage must not break DAG parsing
        log.warning(
            "No outlet Asset for %s on %r: %s. Pass outlets=[...] to declare it explicitly.",
            table,
            sql_conn_id,
            type(err).__name__,
        )
        return []


def operator_lineage(ref: TableRef, summary: dict[str, Any] | None) -> Any:
    """OpenLineage ``OperatorLineage``: the table as input and output, the summary as a run facet.

    Returns ``None`` without the openlineage provider, which makes the extractor fall back.
    """
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    output_facets: dict[str, Any] = {}
    run_facets: dict[str, Any] = {}
    if summary is not None:
        output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
            rowCount=int(summary.get("processed", 0))
        )
        run_facets[RUN_FACET_NAME] = _run_facet_class()(summary=dict(summary))
    return OperatorLineage(
        inputs=[Dataset(namespace=ref.ol_namespace, name=ref.ol_name)],
        outputs=[Dataset(namespace=ref.ol_namespace, name=ref.ol_name, facets=output_facets)],
        run_facets=run_facets,
    )


@lru_cache(maxsize=1)
def _run_facet_class() -> type:
    """Define the custom facet lazily: its base class exists only with OpenLineage installed."""
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class DifyBatchRunFacet(RunFacet):
        """Totals of one Dify batch run: rows, tokens and price (decimal strings)."""

        summary: dict[str, Any] = attrs.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            # No published JSON schema yet: a URN says so instead of a URL that would 404.
            return "urn:airflow-provider-dify:facet:DifyBatchRunFacet:1-0-0"

    return DifyBatchRunFacet
