# %% [markdown]
# # SpatialImpute quick start (Python)
#
# Impute the genes a spatial panel did not measure, check them against held-out truth, and
# keep the ones the reliability score says to trust. Run with
# `python vignettes/quickstart.py` (about a minute on 2 CPU cores); `quickstart.md` is this
# script's executed output.

# %%
import numpy as np

import spatialimpute as si
from spatialimpute.benchmark import gene_metrics
from spatialimpute.datasets import simulate_pair
from spatialimpute.plotting import save_figure, spatial_maps

si.settings.progress = False
spatial, reference, truth = simulate_pair(n_spatial=1500, n_reference=2000, n_genes=150, n_panel=50, seed=0)
print(spatial)
print(reference)

# %% [markdown]
# `spatial` holds raw counts of 50 panel genes and coordinates in `obsm["spatial"]`;
# `reference` holds 150 genes. One call imputes the 100 genes the panel lacks.

# %%
out = si.impute(spatial, reference, method="stimpute", seed=0)
print(out)
print(out.var.sort_values("reliability", ascending=False).head())
print({k: round(v, 1) for k, v in out.uns["spatialimpute"]["timings"].items()})

# %% [markdown]
# The simulator keeps the truth of every gene, so accuracy can be scored, and the
# reliability score checked: genes it ranks higher should be imputed better.

# %%
scores = gene_metrics(truth[:, out.var_names].X, out.X)
top = out.var["reliability"] >= out.var["reliability"].median()
print(f"mean SPCC, all genes: {scores['spcc'].mean():.3f}; top half by reliability: {scores['spcc'][top.to_numpy()].mean():.3f}")
baseline = gene_metrics(truth[:, out.var_names].X, si.impute(spatial, reference, method="knn").X)
print(f"kNN baseline mean SPCC: {baseline['spcc'].mean():.3f}")

# %% [markdown]
# Validation on your own data: hold panel genes out (`genes=` may list panel genes; they are
# then hidden from the model) or run the leave-genes-out benchmark.

# %%
res = si.benchmark.cross_validate(spatial, reference[:, spatial.var_names].copy(), methods=["knn"], n_folds=5,
                                  clustering=False)
print(res.summary["methods"]["knn"]["gene_metrics"]["spcc"])

# %%
genes = list(out.var.sort_values("reliability", ascending=False).index[:2])
save_figure(spatial_maps(truth, out, genes), "quickstart_maps.png")
print("wrote quickstart_maps.png")
