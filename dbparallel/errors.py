"""Errors that are the user's to fix; the CLI prints them in one line (bad rows one to a line)
and exits with code 2."""

import errno

OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a full quota
SPACE_FIX = "free space there (or raise the quota)"


class UserError(ValueError):
    """A mistake in the input (config, data, run directory); the message names what to fix."""


class ConfigError(UserError):
    """A user mistake in the configuration; the message names the dotted key."""


class DataError(UserError):
    """Bad or missing data; the message names the column and the first bad row, or the path."""


class OtherData(DataError):
    """Data that data.source cannot read as given (a lone image, a file named as text, a
    folder of images for Parquet): ``found`` says what they are; the message also says what
    to do when training (a network already trained words its own: cli_network_data.py)."""

    def __init__(self, message: str, found: str):
        super().__init__(message)
        self.found = found


class RunDirError(UserError):
    """A run directory that cannot be used as asked (mismatching config, missing blocks)."""


class RowError(DataError):
    """A bad row of a batch being decoded: ``row`` is its index in the batch. The reader that
    knows where the batch came from turns it into a DataError naming file and row."""

    def __init__(self, row: int, column: str, detail: str):
        super().__init__(f"column {column!r}: row {row} {detail}")
        self.row, self.column, self.detail = row, column, detail

    def at(self, where: str) -> DataError:
        """The same error, located at ``where``: a table's row (``data/part-3.parquet row
        917``) names the column; an image file of a folder (``cats/7.png``) has none."""
        if " row " in where:
            return DataError(f"{where}: column {self.column!r} {self.detail}")
        return DataError(f"{where}: {self.detail}")


MAX_BAD_ROWS = 20  # bad rows a pass over data lists at most: it stops at as many


class BadRows(DataError):
    """The bad rows a pass over the data (``data check``) found, in index order: ``rows``
    holds each one's message, naming its file and row; ``stopped`` says the pass stopped at
    its limit of rows listed, so that more may follow; ``what`` they are (rows, images), and
    ``note`` what the head says besides (a rule every row breaks). One row is said as it
    is."""

    def __init__(self, rows: list[str], stopped: bool = False, what: str = "rows",
                 note: str = ""):
        if len(rows) == 1 and not stopped:
            message = rows[0]
        else:
            head = (f"the first {len(rows)} bad {what} (it stops at {len(rows)}; more may "
                    f"follow)" if stopped else f"{len(rows)} bad {what}")
            message = f"{head}{f'; {note}' if note else ''}:\n  " + "\n  ".join(rows)
        super().__init__(message)
        self.rows, self.stopped, self.what, self.note = rows, stopped, what, note

    def __reduce__(self) -> tuple:  # to and from a Ray task: by its own arguments
        return BadRows, (self.rows, self.stopped, self.what, self.note)


class DataUnreachable(OSError):
    """Reading data failed for a reason that may pass (a dropped connection, a throttled
    object store) after the reader's own retries: the block asks again, it is not bad data."""


def out_of_space(err: BaseException) -> bool:
    """Whether ``err`` is a write that found its disk or quota full: an OSError of
    OUT_OF_SPACE, also one that reached this process as another error holding its message
    (a block process's, through Ray)."""
    if isinstance(err, OSError) and err.errno in OUT_OF_SPACE:
        return True
    return any(f"[Errno {number}]" in str(err) for number in OUT_OF_SPACE)
