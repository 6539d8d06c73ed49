"""The scores the field reports, defined once (and in the data READMEs).

ICBHI-style (4 classes): Sp = correct normal / all normal; Se = correct abnormal, exact class,
/ all abnormal; Score = (Se + Sp) / 2. SPRSound-style for a normal-vs-rest task: SE, SP as
above; AS = (SE + SP) / 2; HS = 2·SE·SP / (SE + SP); Score = (AS + HS) / 2.
"""

from __future__ import annotations

import numpy as np


def icbhi_score(y_true: np.ndarray, y_pred: np.ndarray, normal: int = 0) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    is_normal = y_true == normal
    sp = float(np.mean(y_pred[is_normal] == normal)) if is_normal.any() else 0.0
    se = float(np.mean(y_pred[~is_normal] == y_true[~is_normal])) if (~is_normal).any() \
        else 0.0
    return {"se": round(se, 4), "sp": round(sp, 4), "score": round((se + sp) / 2, 4)}


def sprsound_score(y_true: np.ndarray, y_pred: np.ndarray, normal: int = 0,
                   exact: bool = False) -> dict[str, float]:
    """Normal vs the rest; with exact=True an abnormal case counts only if its class is right
    (record-level Task 2-1: adventitious vs poor quality)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    is_normal = y_true == normal
    sp = float(np.mean(y_pred[is_normal] == normal)) if is_normal.any() else 0.0
    hit = (y_pred == y_true) if exact else (y_pred != normal)
    se = float(np.mean(hit[~is_normal])) if (~is_normal).any() else 0.0
    as_ = (se + sp) / 2
    hs = 2 * se * sp / (se + sp) if se + sp else 0.0
    return {"se": round(se, 4), "sp": round(sp, 4), "as": round(as_, 4), "hs": round(hs, 4),
            "score": round((as_ + hs) / 2, 4)}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> list[list[int]]:
    m = np.zeros((n, n), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        m[t, p] += 1
    return m.tolist()


def roc(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (ties move together)."""
    y, score = np.asarray(y), np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="stable")
    ys, s = y[order], score[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of equal scores
    tps, fps = np.cumsum(ys)[last], np.cumsum(1 - ys)[last]
    tpr = np.concatenate([[0], tps / max(ys.sum(), 1)])
    fpr = np.concatenate([[0], fps / max((1 - ys).sum(), 1)])
    return fpr, tpr


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    fpr, tpr = roc(y, score)
    return round(float(np.trapezoid(tpr, fpr)), 4)
