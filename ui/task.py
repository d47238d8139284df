"""Model work as QgsTasks: the worker is called from the task's thread, and layers are
built by the caller's ``on_done`` in ``finished()``, which QGIS runs on the main thread.

The outcome is a small typed value (Success / Failed / Canceled) rather than a bool, so
the dock can show the right message with the worker's log.
"""

from dataclasses import dataclass, field

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..socio_reasoner.errors import CancelledError, SocioReasonerError


@dataclass
class Success:
    replies: list = field(default_factory=list)


@dataclass
class Failed:
    message: str
    code: str = "error"
    log: str = ""


@dataclass
class Canceled:
    message: str = "Cancelled."


class EngineTask(QgsTask):
    """Runs ``work(report, is_cancelled) -> list of replies`` against an EngineSession.

    ``report(fraction, message)`` moves the task's progress and emits ``message`` (a
    signal, so the dock's label is updated on the main thread, never from this one);
    ``on_done(outcome)`` is called on the main thread when the task ends.
    """

    message = pyqtSignal(str)

    def __init__(self, description, session, work, on_done, expected_errors=()):
        super().__init__(description, QgsTask.Flag.CanCancel)
        self._expected = tuple(expected_errors)   # their message is for the user as is
        self.session = session
        self._work = work
        self._on_done = on_done
        self.outcome = None
        self.last_message = ""

    def report(self, fraction, message=""):
        self.setProgress(max(0.0, min(100.0, 100.0 * fraction)))
        if message and message != self.last_message:
            self.last_message = message
            self.message.emit(message)

    def run(self):
        try:
            replies = self._work(self.report, self.isCanceled)
            self.outcome = Canceled() if self.isCanceled() else Success(replies)
        except CancelledError:
            self.outcome = Canceled()
        except SocioReasonerError as exc:   # known engine errors carry a user-facing message
            self.outcome = Failed(str(exc), exc.code, self.session.log_tail())
        except self._expected as exc:
            self.outcome = Failed(str(exc), type(exc).__name__)
        except Exception as exc:           # the edge: never let a task take QGIS down
            self.outcome = Failed(f"{type(exc).__name__}: {exc}", "internal", self.session.log_tail())
        return isinstance(self.outcome, Success)

    def finished(self, result):
        if self.outcome is None:
            self.outcome = Canceled() if self.isCanceled() else Failed("The task stopped.")
        self._on_done(self.outcome)
