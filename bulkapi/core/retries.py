"""Which operations of a finished job a retry runs again, by the codes a client names."""

from __future__ import annotations

from bulkapi.core.operations import OpError

#: The code that names operations a cancel request cancelled: they carry no error code.
CANCELLED = "cancelled"
#: Every code a retry may select by: the result error codes, and ``cancelled``.
RETRY_CODES = (*(code.value for code in OpError), CANCELLED)
