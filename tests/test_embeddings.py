"""Gene embeddings: tables, FASTA, local ESM-2 (fair-esm and Hugging Face), combination."""

import argparse
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spatialimpute._validation import SpatialImputeInputError
from spatialimpute.data import embeddings as E
from spatialimpute.data.embeddings import (
    GeneEmbeddings,
    combine_embeddings,
    esm2_embeddings,
    read_embedding_table,
    read_fasta,
    resolve_gene_embeddings,
)

# First residues of well-known proteins (UniProt), typed by hand.
FASTA = """>sp|P01308|INS_HUMAN Insulin OS=Homo sapiens OX=9606 GN=INS PE=1 SV=1
MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRREAEDLQVGQVELGGGPGAGSLQ
>sp|P0CG47|UBB_HUMAN Polyubiquitin-B OS=Homo sapiens OX=9606 GN=UBB PE=1 SV=1
MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG
>Mb myoglobin (sperm whale)
MVLSEGEWQLVLHVWAKVEADVAGHGQDILIRLFKSHPETLEKFDRFKHLKTEAEMKASEDLKKHGVTVLTALGAILKK
>H4C1 histone H4
MSGRGKGGKGLGKGGAKRHRKVLRDNIQGITKPAIRRLARRGGVKRISGLIYEETRGVLKVFLENVIRDAVTYTEHAKRK
"""

esm = pytest.importorskip("esm")


@pytest.fixture
def fasta(tmp_path):
    p = tmp_path / "proteins.fasta"
    p.write_text(FASTA)
    return p


def _tiny_fair_esm(tmp_path, cfg_style="dict"):
    from esm.model.esm2 import ESM2

    torch.manual_seed(0)
    model = ESM2(num_layers=2, embed_dim=32, attention_heads=4, alphabet="ESM-1b", token_dropout=True)
    model.eval()
    cfg = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_attention_heads": 4, "token_dropout": True}
    if cfg_style == "namespace":
        cfg = argparse.Namespace(**cfg)
    state = {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()
             if not k.startswith("contact_head.regression")}
    path = tmp_path / "tiny_esm2.pt"
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    return model, path


# ------------------------------------------------------------------ tables
def _has_parquet():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_table_formats_read_the_same_and_match_case_insensitively(tmp_path):
    genes = ["Gfap", "Pdgfra", "Mbp"]
    vec = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    df = pd.DataFrame(vec, index=genes)
    df.to_csv(tmp_path / "e.csv")
    with gzip.open(tmp_path / "e.tsv.gz", "wt") as fh:
        df.to_csv(fh, sep="\t")
    df.T.to_csv(tmp_path / "cols.csv")  # the authors' layout: one column per gene
    np.savez(tmp_path / "e.npz", genes=np.array(genes), embeddings=vec)
    names = ["e.csv", "e.tsv.gz", "cols.csv", "e.npz"]
    if _has_parquet():
        df.columns = [str(c) for c in df.columns]
        df.to_parquet(tmp_path / "e.parquet")
        names.append("e.parquet")
    for name in names:
        emb = read_embedding_table(tmp_path / name)
        got, found = emb.lookup(["GFAP", "mbp", "Olig2"])
        assert found.tolist() == [True, True, False], name
        np.testing.assert_allclose(got[:2], vec[[0, 2]])
        assert not got[2].any()
    cov = emb.coverage(["GFAP", "Olig2", "Sox10", "mbp"])
    assert (cov.n_genes, cov.n_covered, cov.missing) == (4, 2, ("Olig2", "Sox10"))
    assert "2/4" in str(cov) and "Olig2" in str(cov)


def test_bad_tables_raise_clear_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("gene,a,b\nX,1,oops\n")
    with pytest.raises(ValueError, match="numeric"):
        read_embedding_table(tmp_path / "bad.csv")
    np.savez(tmp_path / "bad.npz", names=np.array(["A"]), emb=np.ones((1, 2)))
    with pytest.raises(ValueError, match="'genes' and 'embeddings'"):
        read_embedding_table(tmp_path / "bad.npz")
    (tmp_path / "nan.csv").write_text("gene,a,b\nX,1,\n")
    with pytest.raises(ValueError, match="NaN"):
        read_embedding_table(tmp_path / "nan.csv")
    with pytest.raises(SpatialImputeInputError, match="no file"):
        read_embedding_table(tmp_path / "missing.csv")
    with pytest.raises(SpatialImputeInputError, match="a directory"):
        read_embedding_table(tmp_path)


def test_combine_prefers_first_source_and_rejects_mismatched_widths():
    a = GeneEmbeddings(("A", "B"), np.ones((2, 3)), "a")
    b = GeneEmbeddings(("b", "C"), np.zeros((2, 3)), "b")
    c = combine_embeddings(a, b)
    assert c.genes == ("A", "B", "C")
    assert c.lookup(["B"])[0].sum() == 3.0
    with pytest.raises(ValueError, match="one vector width"):
        combine_embeddings(a, GeneEmbeddings(("D",), np.ones((1, 5)), "wide"))
    assert resolve_gene_embeddings(None) is None
    assert resolve_gene_embeddings({"A": [1, 2]}).dim == 2


# ------------------------------------------------------------------ FASTA
def test_fasta_names_from_uniprot_gn_or_first_word(fasta):
    seqs = read_fasta(fasta)
    assert list(seqs) == ["INS", "UBB", "Mb", "H4C1"]
    assert seqs["UBB"].startswith("MQIFVKTLTG")


@pytest.mark.parametrize("bad", ["MKT1LV", "MKTJLV", "MK?LV"])
def test_fasta_with_unknown_residues_is_rejected(tmp_path, bad):
    p = tmp_path / "bad.fa"
    p.write_text(f">G1\n{bad}\n")
    with pytest.raises(ValueError, match="not amino-acid letters"):
        read_fasta(p)
    p.write_text("MKTL\n>G1\nMKT\n")
    with pytest.raises(ValueError, match="header"):
        read_fasta(p)


def test_no_weights_gives_a_clear_message(fasta, tmp_path):
    with pytest.raises(ValueError, match="Nothing is downloaded"):
        esm2_embeddings(fasta, None)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        esm2_embeddings(fasta, tmp_path / "esm2_t36_3B_UR50D.pt")
    with pytest.raises(ValueError, match="esm_fasta"):
        resolve_gene_embeddings(None, esm_checkpoint=tmp_path)


# ------------------------------------------------------------------ ESM-2 (fair-esm)
@pytest.mark.parametrize("cfg_style", ["dict", "namespace"])
def test_tiny_fair_esm_last_and_mean_pooling_match_the_model(fasta, tmp_path, cfg_style):
    model, path = _tiny_fair_esm(tmp_path, cfg_style)
    last = esm2_embeddings(fasta, path, pooling="last")
    mean = esm2_embeddings(fasta, path, pooling="mean", genes=["ins", "UBB"])
    assert last.genes == ("INS", "UBB", "Mb", "H4C1") and last.dim == 32
    assert mean.genes == ("INS", "UBB")
    seq = read_fasta(fasta)["UBB"]
    _, _, toks = model.alphabet.get_batch_converter()([("g", seq)])
    with torch.no_grad():
        rep = model(toks, repr_layers=[2])["representations"][2][0, 1 : len(seq) + 1]
    np.testing.assert_allclose(last.lookup(["UBB"])[0][0], rep[-1].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean.lookup(["UBB"])[0][0], rep.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(last.vectors[0], last.vectors[1])


def test_esm_cache_is_reused_per_gene_and_model(fasta, tmp_path, monkeypatch):
    _, path = _tiny_fair_esm(tmp_path)
    cache = tmp_path / "cache"
    first = esm2_embeddings(fasta, path, cache_dir=cache)
    assert len(list(cache.rglob("*.npy"))) == 4

    def boom(self, seq):
        raise AssertionError("the model ran although every gene is cached")

    monkeypatch.setattr(E._EsmRunner, "embed", boom)
    again = esm2_embeddings(fasta, path, cache_dir=cache)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    with pytest.raises(AssertionError):  # another pooling is another cache entry
        esm2_embeddings(fasta, path, cache_dir=cache, pooling="mean")


def test_checkpoint_with_arbitrary_objects_is_not_unpickled(fasta, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": Path("/tmp")}, path)
    with pytest.raises(ValueError, match="never unpickles"):
        esm2_embeddings(fasta, path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="fair-esm checkpoint"):
        esm2_embeddings(fasta, path)


# ------------------------------------------------------------------ ESM-2 (Hugging Face)
def test_tiny_huggingface_esm_folder(fasta, tmp_path):
    transformers = pytest.importorskip("transformers")
    from esm.data import Alphabet

    alphabet = Alphabet.from_architecture("ESM-1b")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(alphabet.all_toks) + "\n")
    tok = transformers.EsmTokenizer(vocab_file=str(vocab))
    cfg = transformers.EsmConfig(
        vocab_size=len(alphabet.all_toks), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, pad_token_id=alphabet.padding_idx, mask_token_id=alphabet.mask_idx,
        position_embedding_type="rotary", token_dropout=True, max_position_embeddings=1026,
    )
    torch.manual_seed(0)
    hf = transformers.EsmModel(cfg, add_pooling_layer=False).eval()
    folder = tmp_path / "hf_esm"
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    emb = esm2_embeddings(fasta, folder, pooling="mean", layer=1)
    assert emb.dim == 32 and len(emb) == 4
    seq = read_fasta(fasta)["INS"]
    with torch.no_grad():
        out = hf(**tok(seq, return_tensors="pt"), output_hidden_states=True).hidden_states[1][0]
    np.testing.assert_allclose(emb.vectors[0], out[1 : len(seq) + 1].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="esm_layer"):
        esm2_embeddings(fasta, folder, layer=5)
