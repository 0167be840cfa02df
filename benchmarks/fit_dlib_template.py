"""Fit the "dlib" alignment template and its point weights to dlib's own chip geometry.

Input: ``benchmarks/calibrate_dlib_template.py --points cal.npz``, every calibration image's five
MTCNN points mapped into dlib's 150x150 chip by dlib's own chip transform (``q_i``, ``[N, 5, 2]``).

Aligning image ``i`` with template ``T`` and point weights ``w`` warps it by
``S_i = umeyama_w(p_i -> T)``; dlib's chip is ``M_i``.  Because the weighted least-squares
similarity is equivariant, ``S_i o M_i^-1 = umeyama_w(q_i -> T)``: the map from dlib's chip to
ours.  Its error is how far it moves the chip's pixels: the root mean square displacement over a
grid of the 150x150 chip (0 when ours is dlib's chip).  This script reports that error for

* ``mean``: the mean of ``q_i`` as the template, all points weighted 1 (how kerasface's ``dlib``
  template was made, from 400 images);
* ``mean, weighted``: the same template, the point weights from a small grid (:data:`EYE_W` x
  :data:`NOSE_W` x :data:`MOUTH_W`, picked on the fitting half; normalised to sum to 5);
* ``fit T`` / ``fit T, weighted``: the template itself fitted (L-BFGS) to minimise the error,
  weights 1 or the grid's. It lands on implausible faces (eyes 20 px apart, or mouth corners
  far outside the chip under tiny weights) and does no better held out than the weighted mean;
  kept as the evidence for not using it;

fitted on the even-indexed images and scored on the odd ones (and the other way round), so the
numbers are held out.  Only geometry is used: no identity label, no verification score.
(The weighted fit put chips closer to dlib's but did not verify LFW better, so kerasface keeps
equal weights: docs/alignment.md.)

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


#: Point weights tried (eyes, nose, mouth corners; relative): a small grid, chosen on the fitting half.
EYE_W, NOSE_W, MOUTH_W = (1, 2, 4, 8, 16), (0.5, 1, 2, 4), (0, 0.1, 0.25, 0.5, 1)


def fit_template(q: np.ndarray, w: np.ndarray, maxiter: int = 300) -> np.ndarray:
    """Template minimising the mean squared displacement over ``q`` for fixed weights ``w``."""
    def loss(x):
        return float((rms_displacement(q, x.reshape(5, 2), w) ** 2).mean())

    return minimize(loss, q.mean(0).ravel(), method="L-BFGS-B", options={"maxiter": maxiter}).x.reshape(5, 2)


def pick_weights(q: np.ndarray) -> np.ndarray:
    """The grid's weights (normalised to sum 5) with the least mean displacement over ``q`` (mean template)."""
    grid = [np.array([e, e, n, m, m], float) for e in EYE_W for n in NOSE_W for m in MOUTH_W]
    w = min(grid, key=lambda w: rms_displacement(q, q.mean(0), w).mean())
    return w * 5 / w.sum()


def solve(q: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The template and weights of one row, from the fitting images ``q``."""
    if name == "mean":
        return q.mean(0), np.ones(5)
    if name == "mean, weighted":
        return q.mean(0), pick_weights(q)
    w = np.ones(5) if name == "fit T" else pick_weights(q)
    return fit_template(q, w), w


ROWS = ("mean", "mean, weighted", "fit T", "fit T, weighted")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("points", help="the .npz written by calibrate_dlib_template.py --points")
    p.add_argument("--json", help="write the fitted templates, weights and errors here")
    args = p.parse_args(argv)
    q = np.load(args.points)["points"].astype(np.float64)
    halves = (q[0::2], q[1::2])
    out = {"images": int(len(q)), "rows": {}}
    for name in ROWS:
        held_out = []
        for a, b in ((0, 1), (1, 0)):
            t, w = solve(halves[a], name)
            held_out.append(rms_displacement(halves[b], t, w))
        err = np.concatenate(held_out)
        t_all, w_all = solve(q, name)
        out["rows"][name] = {
            "held_out_rms_px_mean": round(float(err.mean()), 3),
            "held_out_rms_px_median": round(float(np.median(err)), 3),
            "held_out_rms_px_p90": round(float(np.percentile(err, 90)), 3),
            "template": np.round(t_all, 4).tolist(), "weights": np.round(w_all, 4).tolist(),
        }
        print(f"{name:16s} held-out rms displacement: mean {err.mean():.3f} px, median "
              f"{np.median(err):.3f}, p90 {np.percentile(err, 90):.3f}; weights {np.round(w_all, 3).tolist()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
