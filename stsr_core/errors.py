"""The one exception type users see.

Anything the user can fix (a bad file, a wrong option, data that does not match a model)
raises :class:`StsrError` with a message that names the file/array and what is wrong. The
CLI prints it as one line and exits non-zero; the ParaView plugin shows it as an error
message. Any other exception is a bug in this project.
"""


class StsrError(Exception):
    """A user-facing error: the message alone must tell the user what to fix."""
