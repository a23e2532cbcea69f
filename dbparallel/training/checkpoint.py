"""Per-block checkpoints of two kinds, each listed with its checksum in the block's manifest.

- ``state``: everything to resume training exactly (weights, optimizer, EMA, step, ...).
- ``snapshot``: EMA weights + block meta, all the assembly needs.

Files are plain state dicts (``torch.save``; loaded with ``weights_only=True``), never pickled
code. A file is written before the manifest that lists it, so the manifest never points at a
missing file; a file whose checksum disagrees is reported and the previous good one is used.
Each block writes only under ``blocks/block_<b>/``: no two actors ever write the same file.
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any, Literal

from dbparallel.training.storage import DamagedFile, Storage, damaged

Kind = Literal["state", "snapshot"]
log = logging.getLogger(__name__)


def block_dir(block: int) -> str:
    return f"blocks/block_{block}"


def _is_manifest(value: Any) -> bool:
    """Whether ``value`` has a manifest's shape."""
    fields = {"step": int, "file": str, "sha256": str}
    return isinstance(value, dict) and isinstance(value.get("generation", 0), int) and all(
        isinstance(value.get(kind, []), list) and all(
            isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in fields.items())
            for e in value.get(kind, []))
        for kind in ("state", "snapshot"))


MANIFEST_REMEDY = ("restore it from a copy, or train with train.on_unreadable=restart to "
                   "discard the block's checkpoints and train it again from step 0")


def first_save_cut_short(unlisted: list[str]) -> bool:
    """Whether the only checkpoint files of a block without a manifest (``unlisted``) are
    what its first save leaves when stopped between the training state's file and the
    manifest that lists it: that one file (a lost manifest leaves the snapshots too)."""
    return len(unlisted) == 1 and unlisted[0].rsplit("/", 1)[-1].startswith("state_")


class BlockCheckpoints:
    """Checkpoints of one block under ``blocks/block_<b>/`` of a run directory.

    The manifest records the highest write-lease ``generation`` of the writers that wrote it
    (training/lease.py): it outlives a deleted lease.json, so that the next writer's generation
    still passes theirs, and a fenced-off writer of the deleted lease stays fenced off."""

    def __init__(self, storage: Storage, block: int, keep: int = 2, keep_snapshots: int = 1,
                 generation: int = 0):
        self.storage, self.block = storage, block
        self.generation = generation  # the writer's lease generation (0: this one reads)
        self.keep = {"state": keep, "snapshot": keep_snapshots}
        self.dir = block_dir(block)
        self.manifest_path = f"{self.dir}/manifest.json"

    def manifest(self) -> dict[str, list[dict[str, Any]]]:
        """The block's manifest; RunDirError naming it when it is damaged."""
        if not self.storage.exists(self.manifest_path):
            return {"state": [], "snapshot": []}
        try:
            found = self.storage.read_json(self.manifest_path)
        except DamagedFile as err:
            raise damaged(err.where, err.why, MANIFEST_REMEDY) from None
        if not _is_manifest(found):
            raise damaged(self.storage.uri(self.manifest_path),
                          'expected {"state": [...], "snapshot": [...]}, each entry with its '
                          'step, file and sha256', MANIFEST_REMEDY)
        return {"state": [], "snapshot": [], **found}

    def writer_generation(self) -> int:
        """The highest lease generation of the writers that wrote the manifest (0: none
        recorded, or a manifest that cannot be read, which the block's start then names)."""
        try:
            return int(self.manifest().get("generation", 0))
        except DamagedFile:
            return 0

    def save(self, kind: Kind, step: int, payload: dict[str, Any]) -> str:
        """Write ``payload`` as ``kind`` at ``step``; returns the relative file path."""
        import torch  # here, not at the top: `dbparallel status` reads a run without torch

        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        rel = f"{self.dir}/{kind}_{step:08d}.pt"
        self.storage.write_bytes(rel, data)
        manifest = self.manifest()
        # Entries of later steps belong to a timeline this one replaced (the block resumed
        # from an older checkpoint because the later ones were unreadable): the new file is
        # the newest, so pruning can never delete it in their favour.
        stale = [e for e in manifest[kind] if e["step"] >= step and e["file"] != rel]
        entries = [e for e in manifest[kind] if e["step"] < step]
        entries.append({"step": step, "file": rel, "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data)})
        keep = self.keep[kind]
        manifest[kind], dropped = entries[-keep:], entries[:-keep] + stale
        manifest["generation"] = max(int(manifest.get("generation", 0)), self.generation)
        self.storage.write_json(self.manifest_path, manifest)
        for entry in dropped:
            self.storage.delete(entry["file"])
        return rel

    def readable(self, kind: Kind, step: int) -> bool:
        """Whether the file of ``kind`` listed for ``step`` is there with its checksum (read,
        not loaded)."""
        return any(e["step"] == step and isinstance(self._verified(e), bytes)
                   for e in self.manifest()[kind])

    def _verified(self, entry: dict[str, Any]) -> bytes | str:
        """The bytes of a listed file whose checksum verifies, else why not: ``missing`` or
        ``corrupt (checksum mismatch)``."""
        try:
            data = self.storage.read_bytes(entry["file"])
        except FileNotFoundError:
            return "missing"
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return "corrupt (checksum mismatch)"
        return data

    def listed(self, kind: Kind) -> list[str]:
        """Files of ``kind`` listed in the manifest: where ``load_latest`` found none readable,
        the unreadable ones (not read again, which would warn of each once more)."""
        return [e["file"] for e in self.manifest()[kind]]

    def discard(self) -> list[str]:
        """Forget every checkpoint of this block (listed files are deleted; with a damaged
        manifest, the block's checkpoint files by name); returns them."""
        try:
            manifest = self.manifest()
            files = [e["file"] for kind in ("state", "snapshot") for e in manifest[kind]]
        except DamagedFile:
            files, manifest = self._by_name(), {}
        files += [rel for rel in self.unlisted() if rel not in files]
        generation = max(int(manifest.get("generation", 0)), self.generation)
        self.storage.write_json(self.manifest_path, {"state": [], "snapshot": [],
                                                     "generation": generation})
        for rel in files:
            self.storage.delete(rel)
        return files

    def unlisted(self) -> list[str]:
        """The block's checkpoint files where it has no manifest (deleted?): none of them can
        be verified or resumed from."""
        return [] if self.storage.exists(self.manifest_path) else self._by_name()

    def orphans(self) -> list[str]:
        """The block's checkpoint files its manifest does not list, where it has one: left by
        a writer stopped after the manifest that dropped them (keep_checkpoints,
        keep_snapshots) and before their deletion, or stopped while it wrote one (the temp
        file of a local write, of a checkpoint or of the manifest). Nothing reads them."""
        if not self.storage.exists(self.manifest_path):
            return []
        manifest = self.manifest()
        listed = {e["file"] for kind in ("state", "snapshot") for e in manifest[kind]}
        torn = [f"{self.dir}/{name}" for name in self.storage.listdir(self.dir)
                if (name.startswith(("state_", "snapshot_")) and ".pt.tmp-" in name)
                or name.startswith("manifest.json.tmp-")]
        return [rel for rel in self._by_name() if rel not in listed] + torn

    def _by_name(self) -> list[str]:
        return [f"{self.dir}/{name}" for name in self.storage.listdir(self.dir)
                if name.startswith(("state_", "snapshot_")) and name.endswith(".pt")]

    def steps(self, kind: Kind) -> list[int]:
        """Steps at which a ``kind`` is kept, oldest first."""
        return [e["step"] for e in self.manifest()[kind]]

    def load_latest(self, kind: Kind, step: int | None = None) -> dict[str, Any] | None:
        """The newest ``kind`` whose checksum verifies (only the one of ``step`` if given),
        or None if there is none."""
        entries = self.manifest()[kind]
        if step is not None:
            entries = [e for e in entries if e["step"] == step]
        skipped = False
        for entry in reversed(entries):
            data = self._verified(entry)
            if isinstance(data, str):
                log.warning("block %d: checkpoint %s is %s; trying an older one", self.block,
                            entry["file"], data)
                skipped = True
                continue
            if skipped:  # the step said before it was read is not the one it goes on from
                log.warning("block %d: %s of step %d read instead", self.block, entry["file"],
                            entry["step"])
            import torch

            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return None

    def restarts(self) -> int:
        rel = f"{self.dir}/restarts.json"
        return int(self.storage.read_json(rel)["restarts"]) if self.storage.exists(rel) else 0

    def record_restart(self) -> int:
        """Count one more restart of this block's actor; returns the new count."""
        count = self.restarts() + 1
        self.storage.write_json(f"{self.dir}/restarts.json", {"restarts": count})
        return count


def run_checkpoints(storage: Storage) -> list[BlockCheckpoints]:
    """The checkpoints of every block folder of the run in ``storage``."""
    return [BlockCheckpoints(storage, int(name[len("block_"):]))
            for name in storage.listdir("blocks")
            if name.startswith("block_") and name[len("block_"):].isdigit()]


def any_checkpoint(storage: Storage) -> bool:
    """Whether any block of the run in ``storage`` has a checkpoint listed."""
    return any(m["state"] or m["snapshot"]
               for m in (c.manifest() for c in run_checkpoints(storage)))
