"""Gene embeddings for stImpute's gene graph (docs/algorithms/stimpute.md, "Gene graph").

Sources, combinable with :func:`combine_embeddings` (first source wins for a gene):

* a table file (:func:`read_embedding_table`): CSV/TSV (gzip ok), Parquet or NPZ, one row per
  gene symbol (or one column per gene with ``orientation="columns"``, the authors' layout);
* ESM-2 run locally (:func:`esm2_embeddings`) from a FASTA of protein sequences and a local
  checkpoint: a fair-esm ``.pt`` file or a Hugging Face model folder; last-residue (the
  authors' choice) or mean pooling; each gene's vector is cached on disk per model;
* genes without any embedding fall back to expression similarity inside
  :mod:`spatialimpute.data.gene_graph`.

Gene symbols match case-insensitively. Nothing is downloaded and nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import SpatialImputeInputError, check_choice

__all__ = [
    "GeneEmbeddings",
    "EmbeddingCoverage",
    "read_embedding_table",
    "read_fasta",
    "esm2_embeddings",
    "combine_embeddings",
    "resolve_gene_embeddings",
    "ESM_RESIDUES",
]

#: Residue letters accepted in a FASTA (ESM-2 alphabet: 20 standard + X B U Z O).
ESM_RESIDUES = frozenset("ACDEFGHIKLMNPQRSTVWYXBUZO")

# Attention heads of the published ESM-2 sizes, by embedding width (heads are not in the
# weights' shapes; used only when a checkpoint carries no readable config).
_ESM2_HEADS = {320: 20, 480: 20, 640: 20, 1280: 20, 2560: 40, 5120: 40}


@dataclass(frozen=True)
class EmbeddingCoverage:
    """How many of the requested genes an embedding covers.

    Attributes
    ----------
    n_genes, n_covered
        Requested genes and how many have a vector.
    missing
        Requested genes without a vector (they use the expression fallback).
    """

    n_genes: int
    n_covered: int
    missing: tuple[str, ...]

    @property
    def fraction(self) -> float:
        """Covered fraction (0 when no gene was requested)."""
        return self.n_covered / self.n_genes if self.n_genes else 0.0

    def __str__(self) -> str:
        head = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
        return (
            f"gene embeddings cover {self.n_covered}/{self.n_genes} genes "
            f"({100 * self.fraction:.1f}%)" + (f"; missing: {head}" if self.missing else "")
        )

    def to_dict(self) -> dict:
        """JSON-friendly summary."""
        return {"n_genes": self.n_genes, "n_covered": self.n_covered, "missing": list(self.missing)}


@dataclass(frozen=True)
class GeneEmbeddings:
    """A set of gene vectors.

    Attributes
    ----------
    genes
        Gene symbols as given by the source (unique case-insensitively).
    vectors
        ``(len(genes), dim)`` float32, finite.
    source
        Human-readable provenance (file path, model ...).
    """

    genes: tuple[str, ...]
    vectors: np.ndarray
    source: str = ""
    _index: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        where = f"gene_embeddings ({self.source or 'input'})"
        genes = tuple(str(g) for g in self.genes)
        try:
            v = np.ascontiguousarray(np.asarray(self.vectors, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise SpatialImputeInputError(where, "a numeric (genes x dim) matrix", f"{type(err).__name__}: {err}",
                                          "keep only numbers besides the gene names") from None
        if v.ndim != 2 or v.shape[0] != len(genes):
            raise SpatialImputeInputError(where, f"a matrix of shape ({len(genes)}, dim), one row per gene",
                                          f"shape {v.shape}", "give one vector per gene name")
        if v.shape[0] and not np.isfinite(v).all():
            bad = [genes[i] for i in np.flatnonzero(~np.isfinite(v).all(axis=1))[:5]]
            raise SpatialImputeInputError(where, "finite numbers", f"NaN/Inf for {bad}", "remove or repair those rows")
        index: dict[str, int] = {}
        clashes: list[str] = []
        for i, g in enumerate(genes):
            if index.setdefault(g.upper(), i) != i:
                clashes.append(f"{genes[index[g.upper()]]}/{g}")
        if clashes:
            raise SpatialImputeInputError(
                where, "each gene once (names match case-insensitively)", f"duplicated genes {clashes[:5]}",
                "keep one row per gene (or combine sources with combine_embeddings, where the first source wins)",
            )
        v.setflags(write=False)
        object.__setattr__(self, "genes", genes)
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "_index", index)

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.genes)

    def lookup(self, genes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``genes`` (case-insensitive).

        Returns
        -------
        vectors
            ``(len(genes), dim)`` float32; rows of missing genes are zero.
        found
            ``(len(genes),)`` bool.
        """
        pos = np.array([self._index.get(str(g).upper(), -1) for g in genes], dtype=np.int64)
        found = pos >= 0
        out = np.zeros((len(pos), self.dim), dtype=np.float32)
        out[found] = self.vectors[pos[found]]
        return out, found

    def coverage(self, genes: Sequence[str]) -> EmbeddingCoverage:
        """Coverage report for ``genes``."""
        _, found = self.lookup(genes)
        return EmbeddingCoverage(
            n_genes=len(found),
            n_covered=int(found.sum()),
            missing=tuple(str(g) for g, f in zip(genes, found) if not f),
        )


# --------------------------------------------------------------------------- tables
def _read_frame(path: Path, sep: str | None) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return pd.read_parquet(path)
    if sep is None:
        sep = "\t" if re.search(r"\.(tsv|tab|txt)(\.gz)?$", name) else ","
    return pd.read_csv(path, sep=sep, index_col=0)


def read_embedding_table(
    path: str | os.PathLike,
    *,
    orientation: str = "auto",
    sep: str | None = None,
) -> GeneEmbeddings:
    """Read gene embeddings from a table file.

    Parameters
    ----------
    path
        ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) with gene symbols in the first column
        and a header row; ``.parquet`` with gene symbols in the index (or a first string
        column); ``.npz`` with arrays ``genes`` (strings) and ``embeddings`` (or ``vectors``),
        read with ``allow_pickle=False``.
    orientation
        ``"rows"`` (one row per gene), ``"columns"`` (one column per gene, the authors'
        2560-row layout) or ``"auto"``: columns when the row labels are all integers and the
        column labels are not.
    sep
        Field separator for text tables (default: by extension).

    Returns
    -------
    GeneEmbeddings
    """
    p = Path(path)
    check_choice(orientation, "orientation", ["auto", "rows", "columns"])
    if not p.is_file():
        raise SpatialImputeInputError(
            "gene_embeddings", "an existing table file",
            f"{'a directory' if p.is_dir() else 'no file'} at {str(p)!r}", "check the path",
        )
    try:
        genes, vec = (_read_npz if p.name.lower().endswith(".npz") else _read_text_or_parquet)(p, sep, orientation)
    except SpatialImputeInputError:
        raise
    except Exception as err:  # pandas, gzip, pyarrow and numpy raise many types on damaged files
        message = str(err).splitlines()[0] if str(err) else ""
        raise SpatialImputeInputError(
            f"gene_embeddings ({p})", "a readable CSV/TSV (gzip ok), Parquet or NPZ table",
            f"{type(err).__name__}: {message}"[:300],
            "check that the file is complete, in one of these formats, and that NPZ arrays are not object arrays",
        ) from None
    if len(genes) == 0 or vec.ndim != 2 or vec.shape[1] == 0:
        raise SpatialImputeInputError(
            f"gene_embeddings ({p})", "at least one gene with at least one number", f"a table of shape {vec.shape}",
            "check the separator (sep=) and that the first column holds gene symbols",
        )
    return GeneEmbeddings(tuple(genes), vec, source=str(p))


def _read_npz(p: Path, sep, orientation: str) -> tuple[list[str], np.ndarray]:
    with np.load(p, allow_pickle=False) as z:
        keys = set(z.files)
        vkey = "embeddings" if "embeddings" in keys else "vectors" if "vectors" in keys else None
        if "genes" not in keys or vkey is None:
            raise SpatialImputeInputError(
                f"gene_embeddings ({p})", "NPZ arrays 'genes' and 'embeddings' (or 'vectors')", f"{sorted(keys)}",
                "save with np.savez(path, genes=np.array(names, dtype=str), embeddings=matrix)",
            )
        names, vec = z["genes"], z[vkey]
    if names.ndim != 1 or names.dtype.kind not in "US" or vec.dtype.kind not in "iuf" or vec.ndim != 2:
        raise SpatialImputeInputError(
            f"gene_embeddings ({p})", "'genes' a 1-D string array and the matrix a 2-D numeric array",
            f"'genes' {names.dtype} of shape {names.shape}, {vkey!r} {vec.dtype} of shape {vec.shape}",
            "save with np.savez(path, genes=np.array(names, dtype=str), embeddings=matrix)",
        )
    vec = vec.astype(np.float32)
    return [str(g) for g in names.tolist()], (vec.T if orientation == "columns" else vec)


def _read_text_or_parquet(p: Path, sep, orientation: str) -> tuple[list[str], np.ndarray]:
    df = _read_frame(p, sep)
    if p.name.lower().endswith((".parquet", ".pq")) and isinstance(df.index, pd.RangeIndex) and df.shape[1]:
        first = df.columns[0]
        if df[first].dtype == object:
            df = df.set_index(first)
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise SpatialImputeInputError(
            f"gene_embeddings ({p})", "a header row, then one row per gene: its symbol and its numbers",
            f"an empty table (shape {df.shape})", "check the separator (sep=) and the file's content",
        )

    def _all_int(labels) -> bool:
        try:
            [int(str(x)) for x in labels]
            return True
        except ValueError:
            return False

    if orientation == "auto":
        orientation = "columns" if _all_int(df.index) and not _all_int(df.columns) else "rows"
    if orientation == "columns":
        df = df.T
    if df.index.isna().any():
        raise SpatialImputeInputError(f"gene_embeddings ({p})", "a gene symbol on every row",
                                      f"{int(df.index.isna().sum())} rows without one", "fill in or drop those rows")
    try:
        vec = df.to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise SpatialImputeInputError(
            f"gene_embeddings ({p})", "numeric values besides the gene-name column", f"non-numeric entries ({err})",
            "keep gene symbols in the first column only, and check the separator (sep=)",
        ) from None
    return [str(g) for g in df.index], vec


# --------------------------------------------------------------------------- FASTA
def _fasta_gene_name(header: str) -> str:
    m = re.search(r"\bGN=(\S+)", header)
    if m:
        return m.group(1)
    first = header.split()[0] if header.split() else ""
    parts = first.split("|")
    if len(parts) >= 3 and parts[0] in ("sp", "tr"):
        return parts[2].split("_")[0]
    return first


def read_fasta(path: str | os.PathLike) -> dict[str, str]:
    """Read protein sequences keyed by gene symbol.

    The gene symbol is the ``GN=`` field of a UniProt header when present, otherwise the
    first word of the header (for ``sp|ACC|NAME_SPECIES`` the ``NAME`` part). The first
    sequence of a gene (case-insensitive) is kept.

    Raises
    ------
    ValueError
        Empty file, sequence without header, or a residue outside the ESM-2 alphabet
        (``ACDEFGHIKLMNPQRSTVWY`` plus ``XBUZO``); a trailing ``*`` stop is dropped.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"fasta: expected an existing FASTA file, found none at {str(p)!r}.")
    seqs: dict[str, str] = {}
    seen: set[str] = set()
    name: str | None = None
    chunks: list[str] = []
    line_of: int = 0

    def _flush() -> None:
        if name is None:
            return
        seq = "".join(chunks).upper().rstrip("*")
        if not seq:
            raise ValueError(f"fasta ({p}): the record for {name!r} has no sequence.")
        bad = sorted(set(seq) - ESM_RESIDUES)
        if bad:
            raise ValueError(
                f"fasta ({p}): the sequence of {name!r} (record at line {line_of}) holds "
                f"characters {bad} that are not amino-acid letters; expected only "
                f"{''.join(sorted(ESM_RESIDUES))}; fix: replace unknown residues by 'X'."
            )
        if name.upper() not in seen:
            seen.add(name.upper())
            seqs[name] = seq

    with open(p, encoding="utf-8") as fh:
        for i, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                _flush()
                name = _fasta_gene_name(line[1:].strip())
                if not name:
                    raise ValueError(f"fasta ({p}): header at line {i} names no gene.")
                chunks, line_of = [], i
            else:
                if name is None:
                    raise ValueError(
                        f"fasta ({p}): expected a '>' header before sequence line {i}; "
                        "fix: start every record with '>GENE'."
                    )
                chunks.append(re.sub(r"\s+", "", line))
    _flush()
    if not seqs:
        raise ValueError(f"fasta ({p}): expected at least one record, found none.")
    return seqs


# --------------------------------------------------------------------------- ESM-2
class _EsmRunner:
    """A loaded ESM-2 model with a uniform ``embed(seq) -> (L, dim)`` interface."""

    def __init__(self, checkpoint: Path, device, layer: int | None) -> None:
        import torch

        self.device = device
        self.checkpoint = checkpoint
        if checkpoint.is_dir():
            self._init_hf(checkpoint)
        else:
            self._init_fair(checkpoint)
        if layer is None:
            layer = self.num_layers
        if not 0 <= int(layer) <= self.num_layers:
            raise ValueError(
                f"esm_layer: expected 0..{self.num_layers} for this checkpoint, found {layer!r}."
            )
        self.layer = int(layer)
        self.model.eval().to(device)
        self._torch = torch

    # fair-esm ----------------------------------------------------------------
    def _init_fair(self, path: Path) -> None:
        import argparse

        import torch

        try:
            import esm  # noqa: F401
            from esm.model.esm2 import ESM2
        except ImportError:
            raise ImportError(
                "esm_checkpoint: a fair-esm '.pt' file needs the 'fair-esm' package; fix: "
                "pip install fair-esm (or pass a Hugging Face model folder)."
            ) from None
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with a clear message
            raise ValueError(
                f"esm_checkpoint ({path}): could not be read as a weights-only torch file "
                f"({type(err).__name__}: {str(err)[:200]}); SpatialImpute never unpickles "
                "arbitrary objects. Fix: re-save it as {'model': state_dict, 'cfg': {'model': "
                "{'encoder_layers': L, 'encoder_embed_dim': D, 'encoder_attention_heads': H}}} "
                "or use a Hugging Face folder (EsmModel.save_pretrained)."
            ) from None
        if not isinstance(data, Mapping) or "model" not in data:
            raise ValueError(
                f"esm_checkpoint ({path}): expected a fair-esm checkpoint (a dict with a "
                f"'model' state dict), found {type(data).__name__}"
                + (f" with keys {sorted(map(str, data))[:8]}" if isinstance(data, Mapping) else "")
                + "."
            )
        pattern = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
        state = {pattern.sub("", k): v for k, v in data["model"].items()}
        cfg = data.get("cfg", {})
        cfg = cfg.get("model", cfg) if isinstance(cfg, Mapping) else getattr(cfg, "model", cfg)

        def _get(name, default=None):
            if isinstance(cfg, Mapping):
                return cfg.get(name, default)
            return getattr(cfg, name, default)

        layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}
        if "embed_tokens.weight" not in state or not layer_ids:
            raise ValueError(
                f"esm_checkpoint ({path}): the state dict has no ESM-2 weights "
                "(embed_tokens / layers.N); fix: pass an ESM-2 checkpoint."
            )
        n_layers = int(_get("encoder_layers", max(layer_ids) + 1))
        dim = int(_get("encoder_embed_dim", state["embed_tokens.weight"].shape[1]))
        heads = _get("encoder_attention_heads", _ESM2_HEADS.get(dim))
        if heads is None:
            raise ValueError(
                f"esm_checkpoint ({path}): cannot tell the number of attention heads of a "
                f"{dim}-wide model; fix: add cfg['model']['encoder_attention_heads']."
            )
        model = ESM2(
            num_layers=n_layers,
            embed_dim=dim,
            attention_heads=int(heads),
            alphabet="ESM-1b",
            token_dropout=bool(_get("token_dropout", True)),
        )
        expected = set(model.state_dict())
        optional = {"contact_head.regression.weight", "contact_head.regression.bias"}
        missing = expected - set(state) - optional
        unexpected = set(state) - expected
        if missing or unexpected:
            raise ValueError(
                f"esm_checkpoint ({path}): weights do not match an ESM-2 with {n_layers} layers"
                f" x {dim} dims; missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}."
            )
        model.load_state_dict(state, strict=False)
        self.model = model
        self.kind = "fair-esm"
        self.num_layers = n_layers
        self.dim = dim
        self.alphabet = model.alphabet

    # Hugging Face --------------------------------------------------------------
    def _init_hf(self, path: Path) -> None:
        try:
            from transformers import AutoTokenizer, EsmModel
        except ImportError:
            raise ImportError(
                "esm_checkpoint: a model folder needs the 'transformers' package; fix: "
                "pip install transformers (or pass a fair-esm '.pt' file)."
            ) from None
        if not (path / "config.json").is_file():
            raise ValueError(
                f"esm_checkpoint ({path}): expected a Hugging Face model folder with "
                "config.json, found none; fix: EsmModel.save_pretrained(folder)."
            )
        self.model = EsmModel.from_pretrained(str(path), add_pooling_layer=False)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.kind = "huggingface"
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.dim = int(self.model.config.hidden_size)

    def embed(self, seq: str):
        """Per-residue representation ``(L, dim)`` at ``self.layer`` (no special tokens)."""
        torch = self._torch
        with torch.inference_mode():
            if self.kind == "fair-esm":
                conv = self.alphabet.get_batch_converter()
                _, _, toks = conv([("g", seq)])
                out = self.model(toks.to(self.device), repr_layers=[self.layer])
                rep = out["representations"][self.layer][0]
            else:
                enc = self.tokenizer(seq, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                out = self.model(**enc, output_hidden_states=True)
                rep = out.hidden_states[self.layer][0]
            return rep[1 : len(seq) + 1].float()


def _model_key(checkpoint: Path, layer: int, pooling: str, max_length: int) -> str:
    h = hashlib.sha256()
    files = sorted(checkpoint.rglob("*")) if checkpoint.is_dir() else [checkpoint]
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(f"{layer}|{pooling}|{max_length}".encode())
    return h.hexdigest()[:20]


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def esm2_embeddings(
    fasta: str | os.PathLike | Mapping[str, str],
    checkpoint: str | os.PathLike | None,
    *,
    genes: Iterable[str] | None = None,
    pooling: str = "last",
    layer: int | None = None,
    max_length: int = 1022,
    cache_dir: str | os.PathLike | None = None,
    device="cpu",
) -> GeneEmbeddings:
    """Compute gene embeddings with a local ESM-2 model.

    Parameters
    ----------
    fasta
        FASTA file (see :func:`read_fasta`) or a mapping gene -> sequence.
    checkpoint
        Local fair-esm ``.pt`` file (loaded weights-only) or Hugging Face model folder.
        Nothing is downloaded.
    genes
        Restrict to these genes (case-insensitive); default all sequences.
    pooling
        ``"last"``: the last residue's vector (the authors' choice); ``"mean"``: mean over
        residues.
    layer
        Representation layer (default: the last one, as the authors' layer 36 of 36).
    max_length
        Sequences are truncated to their first ``max_length`` residues (ESM's 1022).
    cache_dir
        Folder for per-gene vectors (``.npy``), keyed by checkpoint identity, layer, pooling,
        truncation and the sequence itself. ``None``: no cache.
    device
        Torch device for the model.

    Returns
    -------
    GeneEmbeddings
    """
    if checkpoint is None:
        raise ValueError(
            "esm_checkpoint: ESM-2 embeddings need local model weights, found none. Nothing is "
            "downloaded. Fix: pass esm_checkpoint= a fair-esm .pt file (e.g. "
            "esm2_t36_3B_UR50D.pt) or a Hugging Face ESM-2 folder, or pass a precomputed "
            "embedding table (gene_embeddings='table.csv.gz'), or use gene_embeddings=None for "
            "the expression-similarity graph."
        )
    if pooling not in ("last", "mean"):
        raise ValueError(f"esm_pooling: expected 'last' or 'mean', found {pooling!r}.")
    if int(max_length) < 1:
        raise ValueError(f"max_length: expected a positive integer, found {max_length!r}.")
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(
            f"esm_checkpoint: expected a local .pt file or model folder, found nothing at "
            f"{str(ckpt)!r}; nothing is downloaded, fix: check the path."
        )
    if isinstance(fasta, Mapping):
        seqs = {str(k): str(v).upper() for k, v in fasta.items()}
        bad = {g: sorted(set(s) - ESM_RESIDUES) for g, s in seqs.items() if set(s) - ESM_RESIDUES}
        if bad:
            g0 = next(iter(bad))
            raise ValueError(
                f"fasta: the sequence of {g0!r} holds characters {bad[g0]} that are not "
                "amino-acid letters; fix: replace unknown residues by 'X'."
            )
    else:
        seqs = read_fasta(fasta)
    if genes is not None:
        wanted = {str(g).upper() for g in genes}
        seqs = {g: s for g, s in seqs.items() if g.upper() in wanted}
    if not seqs:
        raise ValueError(
            "fasta: none of the requested genes has a sequence; fix: check the gene symbols in "
            "the FASTA headers (GN= field or first word)."
        )
    import torch

    runner = _EsmRunner(ckpt, torch.device(device), layer)
    key = _model_key(ckpt, runner.layer, pooling, int(max_length))
    cache = Path(cache_dir) / f"esm2_{key}" if cache_dir is not None else None
    names, rows = [], []
    for gene, seq in seqs.items():
        seq = seq[: int(max_length)]
        f = None
        if cache is not None:
            digest = hashlib.sha256(seq.encode()).hexdigest()[:16]
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", gene)[:80]
            f = cache / f"{safe}_{digest}.npy"
            if f.is_file():
                vec = np.load(f, allow_pickle=False)
                if vec.shape == (runner.dim,):
                    names.append(gene)
                    rows.append(vec.astype(np.float32))
                    continue
        rep = runner.embed(seq)
        vec = (rep[-1] if pooling == "last" else rep.mean(dim=0)).cpu().numpy().astype(np.float32)
        if f is not None:
            _atomic_save_npy(f, vec)
        names.append(gene)
        rows.append(vec)
    return GeneEmbeddings(
        tuple(names),
        np.stack(rows),
        source=f"esm2:{runner.kind}:{ckpt.name}:layer{runner.layer}:{pooling}",
    )


# --------------------------------------------------------------------------- combine
def combine_embeddings(*sources: GeneEmbeddings) -> GeneEmbeddings:
    """Merge embedding sets; for a gene present in several, the first source wins.

    Raises
    ------
    ValueError
        When the sources have different vector widths (they cannot share one graph).
    """
    sources = tuple(s for s in sources if s is not None)
    if not sources:
        raise ValueError("combine_embeddings: expected at least one embedding set, found none.")
    dims = {s.dim for s in sources}
    if len(dims) > 1:
        desc = ", ".join(f"{s.source or 'input'}: {s.dim}" for s in sources)
        raise SpatialImputeInputError(
            "gene_embeddings", "one vector width across sources", desc,
            "use embeddings from the same model (or one source plus the expression fallback)",
        )
    seen: set[str] = set()
    genes: list[str] = []
    rows: list[np.ndarray] = []
    for s in sources:
        for g, v in zip(s.genes, s.vectors):
            if g.upper() not in seen:
                seen.add(g.upper())
                genes.append(g)
                rows.append(v)
    return GeneEmbeddings(tuple(genes), np.stack(rows), source=" + ".join(s.source for s in sources))


def resolve_gene_embeddings(
    spec,
    *,
    esm_fasta=None,
    esm_checkpoint=None,
    esm_pooling: str = "last",
    esm_layer: int | None = None,
    esm_cache_dir=None,
    genes: Sequence[str] | None = None,
    device="cpu",
) -> GeneEmbeddings | None:
    """Turn a user's ``gene_embeddings`` argument (and ESM options) into one embedding set.

    Parameters
    ----------
    spec
        ``None`` | path to a table | :class:`GeneEmbeddings` | ``pandas.DataFrame`` (rows =
        genes) | mapping gene -> vector | a list of these (combined, first wins).
    esm_fasta, esm_checkpoint, esm_pooling, esm_layer, esm_cache_dir
        When ``esm_fasta`` is given, ESM-2 vectors are computed (see :func:`esm2_embeddings`)
        and appended after ``spec`` (so a table wins where both cover a gene).
    genes
        The genes of interest (restricts ESM-2 work).
    device
        Device for ESM-2.

    Returns
    -------
    GeneEmbeddings or None
        ``None`` means: expression similarity only.
    """
    items = list(spec) if isinstance(spec, (list, tuple)) else ([] if spec is None else [spec])
    parts: list[GeneEmbeddings] = []
    for it in items:
        if isinstance(it, GeneEmbeddings):
            parts.append(it)
        elif isinstance(it, (str, os.PathLike)):
            parts.append(read_embedding_table(it))
        elif isinstance(it, pd.DataFrame):
            parts.append(
                GeneEmbeddings(tuple(map(str, it.index)), it.to_numpy(np.float32), "DataFrame")
            )
        elif isinstance(it, Mapping):
            keys = list(it)
            parts.append(
                GeneEmbeddings(
                    tuple(map(str, keys)),
                    np.stack([np.asarray(it[k], dtype=np.float32) for k in keys]),
                    "mapping",
                )
            )
        else:
            raise SpatialImputeInputError(
                "gene_embeddings", "None, a table path, a GeneEmbeddings, a DataFrame (rows = genes) "
                "or a mapping gene -> vector (or a list of these)", type(it).__name__, "pass one of these",
            )
    if esm_fasta is not None or esm_checkpoint is not None:
        if esm_fasta is None:
            raise ValueError(
                "esm_fasta: ESM-2 embeddings need protein sequences, found none; fix: pass "
                "esm_fasta= a FASTA file with one record per gene."
            )
        parts.append(
            esm2_embeddings(
                esm_fasta,
                esm_checkpoint,
                genes=genes,
                pooling=esm_pooling,
                layer=esm_layer,
                cache_dir=esm_cache_dir,
                device=device,
            )
        )
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else combine_embeddings(*parts)
