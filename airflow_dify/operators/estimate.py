"""DifyEstimateOperator: answer a random sample of a batch's rows, project the cost of the rest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_dify.batch.estimate import DEFAULT_RESAMPLES
from airflow_dify.batch.pilot import DEFAULT_SAMPLE_ROWS, check_pilot, run_pilot
from airflow_dify.operators.connect import batch_client, hook_dialect
from airflow_dify.operators.dify import DifyBatchOperator
from airflow_dify.operators.errors import raise_for_summary
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.estimates import DEFAULT_ESTIMATES_TABLE, EstimateStore
from airflow_dify.sql.table import SqlTable

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["DifyEstimateOperator"]


class DifyEstimateOperator(DifyBatchOperator):
    """Pilot estimate: answer a random sample of the rows a :class:`DifyBatchOperator` with the same
    arguments would do, and project the tokens and price of the rest with an interval.

    Takes every argument of :class:`DifyBatchOperator` (give it the same ones as the batch that
    follows). The sample is answered and stored like any batch (claims, budget, usage ledger), so
    nothing is wasted: the full batch skips those rows. The other rows are only read (no claim, no
    call) to tally their prompt lengths. The projection fits per-row price and tokens to prompt
    length (OLS) and bounds the rest's total by bootstrap; see :mod:`airflow_dify.batch.estimate`.

    Returns (XCom) and logs: ``sampled``, ``pending`` (rows the batch will still select),
    ``projected_tokens``, ``projected_price``, ``low``/``high`` (the interval of the rest's price),
    ``tokens_low``/``tokens_high``, ``projected_total_price`` (with the sample's exact price),
    ``currency``, ``sample_price``, ``sample_tokens``, ``model``, ``confidence`` and ``answers``:
    the first sample rows (id, prompt and answer excerpts) for an approval screen. Prices are
    decimal strings. The sample run's summary is pushed under the key ``summary``.

    No asset event by default (``outlets=[]``): the batch that follows emits it for the table.

    :param sample_rows: rows to answer in the pilot (a uniform random sample of the selection).
    :param confidence: coverage of the interval, e.g. 0.9 for a 90 % interval.
    :param seed: sampling and bootstrap seed; None: derived from the DAG run (a retry of the same
        run samples the same rows, which it then finds answered).
    :param resamples: bootstrap rounds.
    :param estimates_table: also append the projection to this table on the SQL connection, so
        the cost report can draw it beside what the batch then spent (from the usage ledger);
        None: XCom only.
    """

    template_fields: Sequence[str] = (*DifyBatchOperator.template_fields, "seed")
    ui_color = "#fff4e0"
    ui_fgcolor = "#7a4a00"

    def __init__(
        self,
        *,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        confidence: float = 0.9,
        seed: int | None = None,
        resamples: int = DEFAULT_RESAMPLES,
        estimates_table: str | None = DEFAULT_ESTIMATES_TABLE,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [])
        super().__init__(**kwargs)
        check_pilot(sample_rows, confidence, self._options(None).redo)
        self.sample_rows = sample_rows
        self.confidence = confidence
        self.seed = seed
        self.resamples = resamples
        self.estimates_table = estimates_table

    def _reader(self) -> SqlTable:
        """The same table, read only: no claims, no ledger (the pilot only tallies prompt lengths)."""
        return SqlTable(
            self.sql_hook.get_conn,
            self.table,
            dialect=hook_dialect(self.sql_hook),
            id_column=self.id_column,
            columns=self._options(None).result_columns,
            results_table=self.results_table,
            claims=False,
        )

    def _seed(self, context: Context) -> int:
        if self.seed not in (None, ""):
            return int(self.seed)
        ti = context["ti"]
        raw = f"{ti.dag_id}\0{ti.run_id}\0{ti.task_id}".encode()
        return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")

    def execute(self, context: Context) -> dict[str, Any]:
        with (
            batch_client(self.dify_hook, self._options(context)) as (client, options),
            self._table(context) as table,
            self._reader() as reader,
        ):
            pilot = run_pilot(
                table,
                reader,
                client,
                options,
                sample_rows=self.sample_rows,
                confidence=self.confidence,
                seed=self._seed(context),
                resamples=self.resamples,
                stop=self._stop,
                logger=self.log,
            )
        context["ti"].xcom_push(key="summary", value=pilot.summary.to_dict())
        result = pilot.to_dict()
        if pilot.estimate is not None:
            shown = {k: v for k, v in result.items() if k != "answers"}
            self.log.info("Dify estimate: %s", json.dumps(shown, sort_keys=True))
        if pilot.estimate is not None and self.estimates_table:
            self._record(context, result)
        raise_for_summary(pilot.summary, options.max_failed_ratio)
        return result

    def _record(self, context: Context, result: dict[str, Any]) -> None:
        """Keep the projection next to the ledger; a failure here must not lose the estimate."""
        ti = context["ti"]
        who = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "source_table": self.table}
        db = SqlConnection(self.sql_hook.get_conn, hook_dialect(self.sql_hook))
        try:
            EstimateStore(db, self.estimates_table or DEFAULT_ESTIMATES_TABLE).record(who, result)
        except Exception as exc:  # noqa: BLE001 - the XCom still holds it
            self.log.warning("estimate not recorded in %s: %s", self.estimates_table, type(exc).__name__)
        finally:
            db.discard()
