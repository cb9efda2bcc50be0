#!/usr/bin/env python3
"""Fits the ten coefficients of `TENTORIUM` in src/data/build.rs (run once by hand; not needed at
build or test time). A logistic regression on quadratic features of the MNI coordinates (mm / 50)
of 200 000 AAL-labelled voxels of the Colin27 ch2better grid (seed 0), cerebellum (AAL 91-116)
vs cerebrum (AAL 1-90), nearest-neighbour lookup through the two NIfTI affines.

  python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy==2.3.5 nibabel==5.3.2
  dpkg -x mricron-data_1.2.20211006+dfsg-4_all.deb /tmp/m
  /tmp/v/bin/python scripts/fit-tentorium.py /tmp/m/usr/share/mricron/templates
"""
import sys

import nibabel as nib
import numpy as np

T = sys.argv[1].rstrip("/") + "/"
c = nib.load(T + "ch2better.nii.gz")
a = nib.load(T + "aal.nii.gz")
cd = np.asanyarray(c.dataobj)
ad = np.asanyarray(a.dataobj)
ijk = np.indices(cd.shape).reshape(3, -1).T
xyz = ijk @ c.affine[:3, :3].T + c.affine[:3, 3]
aijk = np.rint((xyz - a.affine[:3, 3]) @ np.linalg.inv(a.affine[:3, :3]).T).astype(int)
ok = np.all((aijk >= 0) & (aijk < np.array(ad.shape)), 1)
lab = np.zeros(len(ijk), np.uint8)
lab[ok] = ad[aijk[ok, 0], aijk[ok, 1], aijk[ok, 2]]
m = lab > 0
X, y = xyz[m], (lab[m] >= 91).astype(float)
idx = np.random.default_rng(0).choice(len(X), 200000, replace=False)
X, y = X[idx], y[idx]
u, v, w = (X / 50.0).T
F = np.stack([np.ones_like(u), u, v, w, u * u, v * v, w * w, u * v, u * w, v * w], 1)
b = np.zeros(F.shape[1])
for _ in range(300):  # Newton-Raphson on the logistic log-likelihood
    p = 1 / (1 + np.exp(-F @ b))
    g = F.T @ (p - y) / len(y)
    H = (F * (p * (1 - p))[:, None]).T @ F / len(y) + 1e-6 * np.eye(len(b))
    b -= np.linalg.solve(H, g)
print("voxel accuracy", ((F @ b > 0) == y).mean())
print("TENTORIUM =", np.round(b, 4).tolist())
