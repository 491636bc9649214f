"""ebsfast's exceptions, shaped like botocore's so code written for boto3 keeps working.

Where botocore is installed, each class here also derives from botocore's class of the same
name, so ``except botocore.exceptions.ClientError`` catches ebsfast's errors too. Messages use
botocore's wording. None of them ever carries a secret key or session token.
"""
from __future__ import annotations

try:  # botocore is optional: only for except-clause compatibility
    import botocore.exceptions as _bc
except ImportError:  # pragma: no cover - exercised where botocore is absent
    _bc = None


def _peer(name: str) -> tuple:
    cls = getattr(_bc, name, None) if _bc is not None else None
    return (cls,) if isinstance(cls, type) else ()


class EbsfastError(Exception):
    """Base of every error ebsfast raises that is not a service error (botocore's
    BotoCoreError): the message is ``fmt`` filled from the keyword arguments."""

    fmt = "An unspecified error occurred"

    def __init__(self, **kwargs):
        msg = self.fmt.format(**kwargs)
        Exception.__init__(self, msg)
        self.kwargs = kwargs

    def __reduce__(self):
        return _rebuild, (self.__class__, self.kwargs)


def _rebuild(cls, kwargs):
    return cls(**kwargs)


def _define(name: str, base: type, fmt: str, doc: str, also: tuple = ()) -> type:
    """An error class deriving from ``base``, botocore's class of the same name where botocore
    is installed, and ``also`` (builtin classes such as ValueError)."""
    bases = (base,) + tuple(p for p in _peer(name) if not issubclass(base, p))
    bases += tuple(a for a in also if not issubclass(base, a))
    cls = type(name, bases, {"fmt": fmt, "__doc__": doc, "__module__": __name__,
                             "__init__": EbsfastError.__init__, "__str__": Exception.__str__,
                             "__reduce__": EbsfastError.__reduce__})
    return cls


if _bc is not None:
    # Every ebsfast error is also a botocore BotoCoreError.
    BotoCoreError = type("BotoCoreError", (EbsfastError, _bc.BotoCoreError),
                         {"__module__": __name__, "__init__": EbsfastError.__init__,
                          "__doc__": EbsfastError.__doc__})
else:  # pragma: no cover
    BotoCoreError = EbsfastError

UnknownServiceError = _define(
    "UnknownServiceError", BotoCoreError,
    "Unknown service: '{service_name}'. Valid service names are: {known_service_names}",
    "ebsfast serves one service: ebs.")
HTTPClientError = _define("HTTPClientError", BotoCoreError,
                          "An HTTP Client raised an unhandled exception: {error}",
                          "The HTTP layer failed in a way not covered below.")
ConnectionError = _define("ConnectionError", BotoCoreError,  # noqa: A001 - botocore's name
                          "An HTTP Client failed to establish a connection: {error}",
                          "No connection could be made.")
EndpointConnectionError = _define("EndpointConnectionError", ConnectionError,
                                  'Could not connect to the endpoint URL: "{endpoint_url}"',
                                  "The endpoint could not be reached.")
SSLError = _define("SSLError", ConnectionError,
                   "SSL validation failed for {endpoint_url} {error}",
                   "TLS certificate validation failed.")
ConnectTimeoutError = _define("ConnectTimeoutError", ConnectionError,
                              'Connect timeout on endpoint URL: "{endpoint_url}"',
                              "Connecting took longer than connect_timeout.")
ProxyConnectionError = _define("ProxyConnectionError", ConnectionError,
                               'Failed to connect to proxy URL: "{proxy_url}"',
                               "The proxy could not be reached.")
ReadTimeoutError = _define("ReadTimeoutError", HTTPClientError,
                           'Read timeout on endpoint URL: "{endpoint_url}"',
                           "The server sent nothing for read_timeout seconds.")
ConnectionClosedError = _define(
    "ConnectionClosedError", HTTPClientError,
    "Connection was closed before we received a valid response from endpoint URL: "
    '"{endpoint_url}".',
    "The connection closed before a whole response arrived.")
ResponseStreamingError = _define("ResponseStreamingError", HTTPClientError,
                                 "An error occurred while reading from response stream: {error}",
                                 "A response body broke off while it was being read.")
NoCredentialsError = _define("NoCredentialsError", BotoCoreError, "Unable to locate credentials",
                             "No credentials were found anywhere in the chain.")
PartialCredentialsError = _define("PartialCredentialsError", BotoCoreError,
                                  "Partial credentials found in {provider}, missing: {cred_var}",
                                  "A source had some credential parts but not all.")
CredentialRetrievalError = _define(
    "CredentialRetrievalError", BotoCoreError,
    "Error when retrieving credentials from {provider}: {error_msg}",
    "A credential source (process, container, instance metadata) failed.")
ProfileNotFound = _define("ProfileNotFound", BotoCoreError,
                          "The config profile ({profile}) could not be found",
                          "The named profile is in neither the config nor credentials file.")
ConfigParseError = _define("ConfigParseError", BotoCoreError,
                           "Unable to parse config file: {path}",
                           "A shared config or credentials file is malformed.")
NoRegionError = _define("NoRegionError", BotoCoreError, "You must specify a region.",
                        "No region from the argument, Config, environment or config file.")
InvalidRegionError = _define("InvalidRegionError", BotoCoreError,
                             "Provided region_name '{region_name}' doesn't match a supported "
                             "format.", "The region name is not a valid host label.")
ParamValidationError = _define("ParamValidationError", BotoCoreError,
                               "Parameter validation failed:\n{report}",
                               "Arguments failed validation; nothing was sent.")
OperationNotPageableError = _define("OperationNotPageableError", BotoCoreError,
                                    "Operation cannot be paginated: {operation_name}",
                                    "get_paginator() for an operation without a paginator.")
PaginationError = _define("PaginationError", BotoCoreError, "Error during pagination: {message}",
                          "A paginator was misused (for example a bad StartingToken).")
UnknownClientMethodError = _define("UnknownClientMethodError", BotoCoreError,
                                   "Client does not have method: {method_name}",
                                   "generate_presigned_url() for a method the client lacks.")
# Bad option values: also ValueErrors
InvalidRetryConfigurationError = _define(
    "InvalidRetryConfigurationError", BotoCoreError,
    'Cannot provide retry configuration for "{retry_config_option}". Valid retry '
    "configuration options are: {valid_options}",
    "A Config(retries=...) key that is not max_attempts, total_max_attempts or mode.",
    also=(ValueError,))
InvalidMaxRetryAttemptsError = _define(
    "InvalidMaxRetryAttemptsError", InvalidRetryConfigurationError,
    'Value provided to "max_attempts": {provided_max_attempts} must be an integer greater than '
    "or equal to {min_value}.",
    "An attempt count below its minimum (Config, AWS_MAX_ATTEMPTS or the profile).")
InvalidRetryModeError = _define(
    "InvalidRetryModeError", InvalidRetryConfigurationError,
    'Invalid value provided to "mode": "{provided_retry_mode}" must be one of: {valid_modes}',
    "A retry mode that is not legacy, standard or adaptive (Config, AWS_RETRY_MODE or the "
    "profile).")
ChecksumMismatchError = _define(
    "ChecksumMismatchError", BotoCoreError,
    "Checksum mismatch for block {block_index} of {snapshot_id}: the service sent "
    "x-amz-Checksum {expected} but the {length} bytes received hash to {actual}. The data was "
    "damaged in transit; retry the read.",
    "A block's bytes do not hash to the x-amz-Checksum the service sent with them.")
ChecksumMissingError = _define(
    "ChecksumMissingError", ChecksumMismatchError,
    "Block {block_index} of {snapshot_id} came without a SHA256 x-amz-Checksum to check its "
    "{length} bytes against (x-amz-Checksum-Algorithm: {algorithm}). EBS sends one with every "
    "block; get_snapshot_block_into(..., VerifyChecksum=False) accepts blocks unchecked.",
    "A block came without the SHA-256 checksum it is checked against (a ChecksumMismatchError: "
    "retried, and never returned unchecked).")


class ClientError(*(_peer("ClientError") or (Exception,))):
    """An error response from the service: ``.response`` is the dict boto3 would give
    (``Error.Code``, ``Error.Message``, ``Reason`` where sent, ``ResponseMetadata``)."""

    MSG_TEMPLATE = ("An error occurred ({error_code}) when calling the {operation_name} "
                    "operation{retry_info}: {error_message}")

    def __init__(self, error_response: dict, operation_name: str):
        retry_info = self._retry_info(error_response)
        error = error_response.get("Error", {})
        msg = self.MSG_TEMPLATE.format(
            error_code=error.get("Code", "Unknown"),
            error_message=error.get("Message", "Unknown"),
            operation_name=operation_name,
            retry_info=retry_info,
        )
        Exception.__init__(self, msg)
        self.response = error_response
        self.operation_name = operation_name

    @staticmethod
    def _retry_info(response: dict) -> str:
        # Only a call that stopped at its attempt limit (MaxAttemptsReached) says so, with
        # the retries it made, zero included; giving up early on an error that is not
        # retried adds nothing, however many retries came before.
        if "ResponseMetadata" not in response:
            return ""
        meta = response["ResponseMetadata"]
        if meta.get("MaxAttemptsReached", False) and "RetryAttempts" in meta:
            return f" (reached max retries: {meta['RetryAttempts']})"
        return ""

    def __reduce__(self):
        return self.__class__, (self.response, self.operation_name)


__all__ = [
    "BotoCoreError", "ChecksumMismatchError", "ChecksumMissingError", "ClientError", "ConfigParseError",
    "ConnectTimeoutError", "ConnectionClosedError", "ConnectionError", "CredentialRetrievalError",
    "EbsfastError", "EndpointConnectionError", "HTTPClientError", "InvalidMaxRetryAttemptsError",
    "InvalidRegionError", "InvalidRetryConfigurationError", "InvalidRetryModeError",
    "NoCredentialsError", "NoRegionError", "OperationNotPageableError", "PaginationError",
    "ParamValidationError", "PartialCredentialsError", "ProfileNotFound", "ProxyConnectionError",
    "ReadTimeoutError", "ResponseStreamingError", "SSLError", "UnknownClientMethodError",
    "UnknownServiceError",
]
