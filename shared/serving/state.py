"""What a predict instance serves from, and how it is (re)loaded from the artifacts bucket.

``ServingState`` is immutable: the model, the table, and the checks and key codec made for the
model's schema. ``StateLoader.reload`` stats ``models/current.skops`` and ``tables/current.json``,
loads only what changed (the model in the form its blob's metadata names,
``shared.compiled.current``: its ONNX graph when compiled, else the skops file), and swaps a whole
new state in with one reference assignment, so a request that read the old reference finishes
with the old model and table, and one that reads the new reference sees both new ones: no answer
ever mixes two versions.

A new model or table whose content cannot be loaded (corrupt, untrusted types, a malformed
pointer, a pointer to a missing or malformed blob) is logged, shown in ``last_reload_error``, and
skipped until its generation changes: the instance keeps serving what it had. A storage fault
(a timeout, a 5xx from the bucket) says nothing about the content, so that generation is not
skipped: ``retry_pending`` is set and the next reload tries again. Which is which is the
project's one policy, ``shared.errors.is_transient``.

The same check stats ``models/shadow.json`` (issue 16, ``shared.serving.shadow``): a new pointer
generation loads the shadow it names, and the one state swap carries champion and shadow, so a
request captures both from one reference. A shadow that cannot be loaded is shown in ``/health``
and never holds back the champion, its table or the first request (which loads no shadow: the
reload thread does, right after).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.compiled.current import load_current
from shared.config import Settings
from shared.contracts import CURRENT_MODEL, SHADOW_POINTER, TABLE_POINTER, ServingMode
from shared.errors import NotFound, is_transient
from shared.logs import get_logger
from shared.scoring import Scorer
from shared.serving.request_checks import InstanceChecker
from shared.serving.shadow import UNREAD, WAITING, ShadowSlot, read_slot, scored_shadow
from shared.storage import Bucket, ObjectInfo
from shared.tables.codec import KeyCodec
from shared.tables.format import Table, read_pointed_table, read_valid_pointer

log = get_logger(__name__)

FIRST_REQUEST = "first request"  # the ``by`` of the load a first request makes (loads no shadow)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ServingState:
    """Everything one answer is computed from; replaced whole, never changed."""

    model: Scorer
    model_note: str  # which form answers, and why (shown in /health)
    model_generation: int
    model_updated: datetime
    model_loaded_by: str  # who loaded this model: "first request", "reload thread" or "reload()"
    model_loaded_check: int  # the number of the reload check that loaded it (StateLoader.checks)
    table: Table | None
    table_generation: int  # generation of the pointer the table was read through (0: none)
    table_usable: bool  # whether this mode may answer from the table
    table_note: str  # why the table is (not) used, for /health
    checker: InstanceChecker
    codec: KeyCodec
    loaded_at: datetime
    shadow: Scorer | None = None  # what the prediction log scores beside the model (None: nothing)
    shadow_note: str = ""  # why the shadow is (not) scored, for /health
    shadow_slot: ShadowSlot = ShadowSlot()  # what models/shadow.json named when last read

    @property
    def shadow_generation(self) -> int:
        """The generation of ``models/shadow.json`` this state read (0: none)."""
        return self.shadow_slot.generation


def table_fits(table: Table, model: Scorer, mode: str) -> tuple[bool, str]:
    """Whether ``mode`` may answer from ``table`` while ``model`` is served, and why (not).

    The key and the score shape must fit the model's schema; in hybrid mode the table must also
    have been built from this very model version, so hits and misses come from one model.
    """
    schema = model.schema
    task = schema.label.task
    if tuple(table.key) != tuple(schema.key):
        return False, f"table key {list(table.key)} differs from the schema key {list(schema.key)}"
    width = len(schema.label.classes) if task == "multiclass" else 0
    if (table.scores.ndim == 2 and table.scores.shape[1] != width) or (table.scores.ndim == 1 and width):
        return False, f"table scores of shape {table.scores.shape} do not fit a {task} model"
    if mode == ServingMode.HYBRID and table.model_version != model.version:
        return False, f"table was built from model {table.model_version!r}, serving {model.version!r}"
    return True, "in use"


class StateLoader:
    """Loads the serving state and reloads what changed; one reload at a time."""

    def __init__(self, artifacts: Bucket, settings: Settings, shadow_off: str | None = None) -> None:
        """``shadow_off``: why this instance scores no shadow (None: it does)."""
        self.artifacts = artifacts
        self.settings = settings
        self.mode = settings.serving_mode
        self.state: ServingState | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.checks = 0  # reload checks so far (each looks at both generations once)
        self.failures = 0
        self._lock = threading.Lock()
        self._skip: dict[str, int] = {}  # blob -> generation whose content failed to load (not retried)
        self.retry_pending = False  # the last reload met a storage fault: the next one should retry
        self.shadow_off = shadow_off
        self.shadow_retry: str | None = None  # the storage fault the shadow's next load retries

    def reload(self, by: str = "reload()") -> bool:
        """Load whatever changed since the last look; True when a new state was swapped in.

        ``by`` names the caller (shown in ``/health`` for the model it loads), so a test or an
        operator can tell a pick-up by the reload thread from one by a request.
        """
        with self._lock:
            self.checks += 1
            return self._reload(by)

    def _stat(self, blob: str) -> ObjectInfo | None:
        try:
            return self.artifacts.stat(blob)
        except NotFound:
            return None

    def _reload(self, by: str) -> bool:
        self.retry_pending = False
        current = self.state
        seen = (
            (current.model_generation, current.table_generation, current.shadow_generation)
            if current
            else None
        )
        try:
            model_info = self._stat(CURRENT_MODEL)
            pointer_info = self._stat(TABLE_POINTER)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._failed("models/ and tables/ generations", 0, exc)
            return False
        model_gen = model_info.generation if model_info else 0
        pointer_gen = pointer_info.generation if pointer_info else 0
        shadow_gen = self._shadow_generation(current)
        if (model_gen, pointer_gen, shadow_gen) == seen:
            return False
        model, model_note, model_gen, model_updated = self._load_model(current, model_info)
        if model is None:
            return False
        table, table_gen = self._load_table(current, pointer_gen)
        slot = self._load_shadow(current, shadow_gen, first=by == FIRST_REQUEST)
        if (model_gen, table_gen, slot.generation) == seen:
            return False  # what changed could not be loaded: keep the current state
        usable, note = self._table_use(table, model)
        shadow, shadow_note = scored_shadow(slot, model)
        reuse = current is not None and current.model.schema == model.schema
        same_model = current is not None and current.model is model
        loaded_by, loaded_check = (
            (current.model_loaded_by, current.model_loaded_check)
            if same_model and current
            else (by, self.checks)
        )
        state = ServingState(
            model=model,
            model_note=model_note,
            model_generation=model_gen,
            model_updated=model_updated,
            model_loaded_by=loaded_by,
            model_loaded_check=loaded_check,
            table=table,
            table_generation=table_gen,
            table_usable=usable,
            table_note=note,
            checker=current.checker
            if reuse and current
            else InstanceChecker(model.schema, self.settings.max_instances),
            codec=current.codec if reuse and current else KeyCodec(model.schema),
            loaded_at=datetime.now(UTC),
            shadow=shadow,
            shadow_note=shadow_note,
            shadow_slot=slot,
        )
        self.state = state  # one reference assignment: requests see the old or the new state
        self.reloads += 1
        self._log_loaded(state)
        return True

    def _table_use(self, table: Table | None, model: Scorer) -> tuple[bool, str]:
        """Whether requests may be answered from ``table`` in this mode, and why (or why not)."""
        if self.mode == ServingMode.DYNAMIC:
            return False, "dynamic mode answers from the model only"
        if table is None:
            return False, "no table"
        return table_fits(table, model, self.mode)

    def _log_loaded(self, state: ServingState) -> None:
        """One log line per reload that changed what is served."""
        table = state.table
        log.info(
            "serving state loaded",
            extra={
                "fields": {
                    "mode": self.mode,
                    "model_version": state.model.version,
                    "model_form": state.model.form,
                    "model_generation": state.model_generation,
                    "table_version": table.version if table else None,
                    "table_rows": len(table) if table else 0,
                    "table_used": state.table_usable,
                    "table_note": state.table_note,
                    "shadow_version": state.shadow_slot.version,
                    "shadow_scored": state.shadow is not None,
                    "shadow_note": state.shadow_note,
                }
            },
        )

    def _failed(self, blob: str, generation: int, exc: BaseException) -> None:
        """Record a failed load: skip that generation for a content fault, retry a storage fault."""
        self.last_error = f"{blob}@{generation}: {exc}"
        self.failures += 1
        fields = {"blob": blob, "generation": generation, "error": repr(exc)}
        if is_transient(exc):
            self.retry_pending = True
            log.warning(
                "storage fault while loading a serving artifact; will retry", extra={"fields": fields}
            )
            return
        self._skip[blob] = generation
        log.error("could not load a new serving artifact; keeping the current one", extra={"fields": fields})

    def _load_model(
        self, current: ServingState | None, info: ObjectInfo | None
    ) -> tuple[Scorer | None, str, int, datetime]:
        keep = (
            (current.model, current.model_note, current.model_generation, current.model_updated)
            if current
            else (None, "", 0, _EPOCH)
        )
        generation = info.generation if info else 0
        if info is None:
            if current is not None:
                log.warning("serving model blob vanished; keeping the loaded model")
            return keep
        if (current is not None and generation == current.model_generation) or self._skip.get(
            CURRENT_MODEL
        ) == generation:
            return keep
        try:
            # Static serving never scores: it reads a compiled model's schema without ONNX Runtime.
            loaded = load_current(self.artifacts, self.settings, info, eager=self.mode != ServingMode.STATIC)
        except NotFound:
            return keep
        except Exception as exc:  # neither a corrupt model nor a storage fault may take serving down
            self._failed(CURRENT_MODEL, generation, exc)
            return keep
        return loaded.scorer, loaded.note, loaded.info.generation, loaded.info.updated

    def _shadow_generation(self, current: ServingState | None) -> int:
        """The generation of ``models/shadow.json`` now (the state's when it cannot be read)."""
        try:
            info = self._stat(SHADOW_POINTER)
        except Exception as exc:  # whatever it is, the champion's reload goes on without it
            self._shadow_retry_after(exc)
            return current.shadow_generation if current else 0
        return info.generation if info else 0

    def _load_shadow(self, current: ServingState | None, generation: int, first: bool) -> ShadowSlot:
        """The shadow of pointer ``generation``: kept while it is the state's, else read again.

        The first request loads none (its latency is the champion's alone): its state says so,
        and the reload thread's first check loads it."""
        kept = current.shadow_slot if current else ShadowSlot()
        if generation == kept.generation:
            return kept
        if generation == 0:
            return ShadowSlot()
        if first:
            return ShadowSlot(UNREAD, note=WAITING)
        try:
            slot = read_slot(self.artifacts, self.settings, generation, self.shadow_off)
        except Exception as exc:  # a storage fault (content faults are a slot): retried next check
            self._shadow_retry_after(exc)
            return kept
        self.shadow_retry = None
        if slot.version is not None and slot.scorer is None and self.shadow_off is None:
            log.error(
                "the shadow model cannot be loaded; it is skipped until models/shadow.json changes",
                extra={"fields": {"version": slot.version, "generation": slot.generation, "note": slot.note}},
            )
        return slot

    def _shadow_retry_after(self, exc: BaseException) -> None:
        """A fault reading the shadow: said in /health, tried again at the next check."""
        self.shadow_retry = f"{SHADOW_POINTER}: {type(exc).__name__}: {exc}"[:500]
        log.warning("could not read the shadow; will retry", extra={"fields": {"error": repr(exc)}})

    def _load_table(self, current: ServingState | None, generation: int) -> tuple[Table | None, int]:
        keep = (current.table, current.table_generation) if current else (None, 0)
        if self.mode == ServingMode.DYNAMIC:
            return None, generation  # never used: do not spend memory on it
        if current is not None and generation == current.table_generation:
            return keep
        if generation == 0:
            return None, 0
        if self._skip.get(TABLE_POINTER) == generation:
            return keep
        try:
            # A malformed pointer raises, as a corrupt model does: it is no statement that there
            # is no table, so the table being served stays, and /health says why.
            pointer, pointer_gen = read_valid_pointer(self.artifacts)
            if pointer is None:  # deleted meanwhile: there is no table any more
                return None, pointer_gen
            # the exact object it names
            table = read_pointed_table(self.artifacts, pointer, max_bytes=self.settings.max_table_bytes)
        except Exception as exc:  # a malformed pointer or table, or a storage fault: keep what we have
            self._failed(TABLE_POINTER, generation, exc)
            return keep
        return table, pointer_gen
