"""The resume point of a run, typed: what ``checkpoint/state.json`` holds and what a resumed run does with it.

After every epoch :class:`kit.train.callbacks.EpochCheckpoint` writes a :class:`ResumeState`; ``kit train --resume``
reads it back (:func:`read_resume_state`) and the trainer asks it which phases are done, where the interrupted one
began and where it goes on, and restores the best-so-far tracker and the early-stopping/plateau counters from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.io import URLPath
from kit.runs import read_state

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class ResumeState:
    phase: int  # the phase the checkpoint's epoch belongs to (1 or 2)
    phase_start: int  # that phase's first epoch (0-based, counted over the whole run)
    next_epoch: int  # the first epoch still to train (0-based)
    phase_done: bool  # the phase ended with this epoch (its last one, or early stopping)
    weights: str  # the checkpoint file (model + optimizer weights) in checkpoint/
    tracker: dict[str, Any]  # the best-so-far tracker (kit.train.callbacks.Tracker.to_json)
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # counters of the resumable callbacks
    ema_swapped: bool = False  # the checkpoint holds the EMA weights in the model and the raw ones in the optimizer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> ResumeState:
        """A state.json's fields; one that misses or mistypes a field is one line naming the file."""
        try:
            callbacks = dict(data.get("callbacks") or {})
            # Checkpoints written before kit owned the EMA state recorded Keras' swap flag among the callbacks.
            ema_swapped = bool(data.get("ema_swapped", callbacks.pop("ema", None)))
            return cls(
                phase=int(data["phase"]),
                phase_start=int(data["phase_start"]),
                next_epoch=int(data["next_epoch"]),
                phase_done=bool(data["phase_done"]),
                weights=str(data["weights"]),
                tracker=dict(data["tracker"]),
                callbacks=callbacks,
                ema_swapped=ema_swapped,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KitError(
                f"{source} is not a resume point kit wrote ({type(exc).__name__}: {str(exc)[:80]})",
                "delete the run's checkpoint/ folder to restart it from its first epoch, or drop --resume",
            ) from None

    def finished(self, phase: int) -> bool:
        """``phase`` trained to its end before the interruption: a resumed run skips it."""
        return phase < self.phase or (phase == self.phase and self.phase_done)

    def interrupted(self, phase: int) -> bool:
        """``phase`` is the one the interruption cut short: a resumed run goes on with it from ``next_epoch``."""
        return phase == self.phase and not self.phase_done


def read_resume_state(run_dir: Path | URLPath) -> ResumeState | None:
    """The resume point of ``run_dir``, or None before its first epoch ended."""
    data = read_state(run_dir)
    return None if data is None else ResumeState.from_json(data, f"{run_dir}/checkpoint/state.json")


def swap_ema_back(model: keras.Model) -> None:
    """Put the raw weights back in a model restored from a checkpoint written with the EMA weights swapped in.

    Keras' own ``SwapEMAWeights`` does the swap (it holds the distributed-variable arithmetic); a test-begin swaps
    whatever is in the model for the optimizer's copy, which is the swap a resumed epoch needs before it trains.
    """
    import keras

    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    swap.on_test_begin()
