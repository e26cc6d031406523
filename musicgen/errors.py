"""Errors musicgen raises for bad input; the CLI turns them into one-line messages."""


class MusicgenError(Exception):
    """Base class: an error whose message is meant for the user, without a traceback."""


class MidiError(MusicgenError, ValueError):
    """A MIDI source could not be read or converted; the message names the source."""

    def __init__(self, source, reason):
        self.source = str(source)
        self.reason = str(reason)
        super().__init__(f"{self.source}: {self.reason}")


class DataError(MusicgenError, ValueError):
    """A dataset, path or argument is missing or malformed; the message names it."""
