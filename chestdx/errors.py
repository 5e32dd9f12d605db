"""The one exception type for failures a user can cause."""


class ChestDxError(Exception):
    """A problem with the user's input or request, with a message that says what to do.

    The CLI prints the message without a traceback and exits with status 2; the web
    service answers it with a 4xx status. Library code raises it; it never calls
    ``sys.exit``.

    Example:
        >>> raise ChestDxError("folder 'scans/' holds no image files: point chestdx at a DICOM folder, a .zip, a NIfTI file or image slices")

    The message is always one line: line breaks in it (a decoder's multi-line error
    quoted in it, for example) are folded into spaces.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
