"""Fit the "dlib" alignment template and its point weights to dlib's own chip geometry.

Input: ``benchmarks/calibrate_dlib_template.py --points cal.npz``, every calibration image's five
MTCNN points mapped into dlib's 150x150 chip by dlib's own chip transform (``q_i``, ``[N, 5, 2]``).

Aligning image ``i`` with template ``T`` and point weights ``w`` warps it by
``S_i = umeyama_w(p_i -> T)``; dlib's chip is ``M_i``.  Because the weighted least-squares
similarity is equivariant, ``S_i o M_i^-1 = umeyama_w(q_i -> T)``: the map from dlib's chip to
ours.  Its error is how far it moves the chip's pixels: the root mean square displacement over a
grid of the 150x150 chip (0 when ours is dlib's chip).  This script reports that error for

* ``mean``: the template of today (the mean of ``q_i``), all points weighted 1;
* ``fit T``: the template that minimises the error, all points weighted 1;
* ``fit T, w``: template and weights together (weights normalised to sum to 5);

fitted on the even-indexed images and scored on the odd ones (and the other way round), so the
numbers are held out.  Only geometry is used: no identity label, no verification score.

Run: ``python benchmarks/fit_dlib_template.py cal.npz [--json fit.json]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.optimize import minimize

CHIP = 150
_G = (np.arange(16) + 0.5) * CHIP / 16
GRID = np.stack(np.meshgrid(_G, _G), -1).reshape(-1, 2)   # [256, 2] chip pixel positions


def umeyama_batch(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares similarity ``[N, 2, 3]`` mapping each ``src[i]`` ``[5, 2]`` onto ``dst`` ``[5, 2]``."""
    w = w / w.sum()
    mu_s = np.einsum("k,nkd->nd", w, src)
    mu_d = w @ dst
    sc, dc = src - mu_s[:, None], dst - mu_d
    var_s = np.einsum("k,nkd->n", w, sc ** 2)
    cov = np.einsum("k,kd,nke->nde", w, dc, sc)                       # [N, 2, 2] dst x src
    u, d, vt = np.linalg.svd(cov)
    sign = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    s = np.stack([np.ones_like(sign), sign], -1)
    rot = u @ (s[:, :, None] * vt)
    scale = (d * s).sum(-1) / var_s
    a = scale[:, None, None] * rot
    t = mu_d - np.einsum("nde,ne->nd", a, mu_s)
    return np.concatenate([a, t[:, :, None]], -1)


def rms_displacement(q: np.ndarray, template: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per image: root mean square distance (chip px) each grid pixel of dlib's chip moves in ours."""
    m = umeyama_batch(q, template, w)
    moved = np.einsum("nde,ge->ngd", m[:, :, :2], GRID) + m[:, None, :, 2]
    return np.sqrt(((moved - GRID) ** 2).sum(-1).mean(-1))


def fit(q: np.ndarray, start: np.ndarray, with_weights: bool) -> tuple[np.ndarray, np.ndarray]:
    """Template (and weights) minimising the mean squared displacement over ``q``."""
    def unpack(x):
        t = x[:10].reshape(5, 2)
        w = np.exp(np.concatenate([[0.0], x[10:]])) if with_weights else np.ones(5)
        return t, w * 5 / w.sum()

    def loss(x):
        t, w = unpack(x)
        return float((rms_displacement(q, t, w) ** 2).mean())

    x0 = np.concatenate([start.ravel(), np.zeros(4)]) if with_weights else start.ravel()
    res = minimize(loss, x0, method="L-BFGS-B", options={"maxiter": 2000})
    return unpack(res.x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("points", help="the .npz written by calibrate_dlib_template.py --points")
    p.add_argument("--json", help="write the fitted templates, weights and errors here")
    args = p.parse_args(argv)
    q = np.load(args.points)["points"].astype(np.float64)
    halves = (q[0::2], q[1::2])
    out = {"images": int(len(q)), "rows": {}}
    for name in ("mean", "fit T", "fit T, w"):
        held_out = []
        for a, b in ((0, 1), (1, 0)):
            if name == "mean":
                t, w = halves[a].mean(0), np.ones(5)
            else:
                t, w = fit(halves[a], halves[a].mean(0), with_weights=(name == "fit T, w"))
            held_out.append(rms_displacement(halves[b], t, w))
        err = np.concatenate(held_out)
        t_all, w_all = (q.mean(0), np.ones(5)) if name == "mean" else fit(q, q.mean(0), name == "fit T, w")
        out["rows"][name] = {
            "held_out_rms_px_mean": round(float(err.mean()), 3),
            "held_out_rms_px_median": round(float(np.median(err)), 3),
            "held_out_rms_px_p90": round(float(np.percentile(err, 90)), 3),
            "template": np.round(t_all, 4).tolist(), "weights": np.round(w_all, 4).tolist(),
        }
        print(f"{name:10s} held-out rms displacement: mean {err.mean():.3f} px, median "
              f"{np.median(err):.3f}, p90 {np.percentile(err, 90):.3f}; weights {np.round(w_all, 3).tolist()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
