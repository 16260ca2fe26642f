"""Airflow-free Dify HTTP client: auth, endpoints, error mapping, retries, streaming."""

from airflow_dify.client.auth import ApiKeyAuth, DifyAuth, normalize_api_key
from airflow_dify.client.client import DifyClient
from airflow_dify.client.errors import (
    DifyAPIError,
    DifyAuthError,
    DifyBadRequestError,
    DifyConfigError,
    DifyError,
    DifyForbiddenError,
    DifyNotFoundError,
    DifyQuotaError,
    DifyRateLimitError,
    DifyResponseError,
    DifyRunFailedError,
    DifyServerError,
    DifyStreamError,
    DifyTimeoutError,
    DifyTransportError,
)
from airflow_dify.client.models import MODE_FAMILY, STREAMING_ONLY_MODES, AppInfo, DifyResult, Usage
from airflow_dify.client.oauth2 import OAuth2ClientCredentials, clear_token_cache
from airflow_dify.client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "MODE_FAMILY",
    "NO_RETRY",
    "STREAMING_ONLY_MODES",
    "ApiKeyAuth",
    "AppInfo",
    "DifyAPIError",
    "DifyAuth",
    "DifyAuthError",
    "DifyBadRequestError",
    "DifyClient",
    "DifyConfigError",
    "DifyError",
    "DifyForbiddenError",
    "DifyNotFoundError",
    "DifyQuotaError",
    "DifyRateLimitError",
    "DifyResponseError",
    "DifyResult",
    "DifyRunFailedError",
    "DifyServerError",
    "DifyStreamError",
    "DifyTimeoutError",
    "DifyTransportError",
    "OAuth2ClientCredentials",
    "RetryPolicy",
    "Usage",
    "clear_token_cache",
    "normalize_api_key",
]
