"""Numba kernels of the exact k-patient search (see `lus_core.split.search` for the algorithm).

Everything here works on exact int64 values; nothing is compared in floating point.
A "combination" is a strictly increasing array of positions into the free-patient matrix `V`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OBJ_STD = 0
OBJ_RANGE = 1
INF = np.iinfo(np.int64).max


@njit(cache=True)
def objective_int(x, obj):
    """Exact integer objective of one test-count vector `x` (C,).

    std:   C * sum(x_c^2) - (sum x_c)^2  ==  C^2 * population variance  ==  sum_{a<b} (x_a - x_b)^2
    range: max(x) - min(x)
    """
    C = x.shape[0]
    if obj == OBJ_STD:
        s = 0
        q = 0
        for c in range(C):
            s += x[c]
            q += x[c] * x[c]
        return C * q - s * s
    mx = x[0]
    mn = x[0]
    for c in range(1, C):
        if x[c] > mx:
            mx = x[c]
        if x[c] < mn:
            mn = x[c]
    return mx - mn


@njit(cache=True, nogil=True)
def search_tasks(V, F, fv, base, kf, minc, obj, prune, prefixes, t0, t1, npair, LO, HI, CHI, prev_same,
                 gkey, mult, out_val, out_combo, out_eval, out_nodes):
    """Depth-first search of every combination that starts with prefixes[t0:t1] (one task each).

    V (n, C): free patients' class counts; base (C,): the forced test patients' sum.
    F (n, nf): per-patient bound features: columns p < npair are the pair differences
    x_a - x_b (a < b), columns npair..npair+C-1 are h_c = C*x_c - sum(x).
    fv (n,): objective_int of each single patient (std only).
    LO[r, s, p] / HI[r, s, p]: sum of the r smallest / largest values of F[:, p] over positions
    s..n-1; CHI[r, s, c]: sum of the r largest V[:, c] there.

    For task ti, writes the smallest objective found (INF if none) to out_val[ti], its
    combination to out_combo[ti], the number of complete combinations scored to out_eval[ti]
    and of internal nodes to out_nodes[ti]. Combinations are visited in lexicographic order and
    a leaf replaces the task's best only when strictly smaller, so out_combo[ti] is the
    lexicographically first combination of minimal value inside the task.

    prune=False: plain exhaustive enumeration (every leaf scored).
    prune=True also skips
    (i)  non-canonical picks among identical patients (a patient whose identical predecessor is
         not picked: the swap gives the same value and a lexicographically smaller list),
    (ii) subtrees that cannot reach min_test_per_class,
    (iii) subtrees whose lower bound is >= the task's best (nothing better there, and ties come
         later),
    (iv) subtrees that cannot beat the shared key gkey[0].
    The lower bound: every completion of partial sum S by r patients from positions >= s has
    feature p in [F_p(S) + LO[r, s, p], F_p(S) + HI[r, s, p]]. The exact objective is
    std: f = sum_p d_p^2 over the pairs = sum_c h_c^2 / C;  range: f = max_p |d_p|,
    so minimising each term separately over its interval gives a valid lower bound.
    gkey[0] (shared between threads, racy on purpose) is `value * mult + task` of a result that
    some task has recorded, so that (value, task) pairs compare lexicographically: a subtree of
    task ti with lower bound lb is skipped iff lb * mult + ti >= gkey[0]: it can give neither a
    smaller value nor an equal value from an earlier task. A seed incumbent (a combination of
    that value whose prefix is task tk, found by local search) enters as value * mult + tk + 1:
    task tk still searches lb <= value, so it (or an earlier task, for an identical-patient
    twin) records a result at least as good. With mult == 1 (when the packed key could
    overflow) only strictly worse subtrees are skipped (lb > gkey[0]). A stale read only weakens
    pruning; a lost write leaves a larger, still valid key. None of these rules can skip the lexicographically first optimum,
    so the result does not depend on thread timing (the counts do).
    """
    n, C = V.shape
    nf = F.shape[1]
    t = prefixes.shape[1]
    idx = np.zeros(kf + 1, np.int64)
    S = np.zeros((kf + 1, C), np.int64)
    FS = np.zeros((kf + 1, nf), np.int64)
    nxt = np.zeros(kf + 1, np.int64)
    chosen = np.zeros(n, np.bool_)
    x = np.zeros(C, np.int64)
    w = np.zeros(C, np.int64)
    need = np.zeros(C, np.int64)
    base_f = np.zeros(nf, np.int64)
    tb = 0
    for c in range(C):
        tb += base[c]
    if nf == npair + C:  # bound features in use (prune=True): pair differences, then h_c
        q = 0
        for a in range(C):
            for b in range(a + 1, C):
                base_f[q] = base[a] - base[b]
                q += 1
        for c in range(C):
            base_f[npair + c] = C * base[c] - tb
    for ti in range(t0, t1):
        lbest = INF
        nev = 0
        nnodes = 0
        for c in range(C):
            S[0, c] = base[c]
        for p in range(nf):
            FS[0, p] = base_f[p]
        for d in range(t):
            j = prefixes[ti, d]
            idx[d] = j
            chosen[j] = True
            for c in range(C):
                S[d + 1, c] = S[d, c] + V[j, c]
            for p in range(nf):
                FS[d + 1, p] = FS[d, p] + F[j, p]
        ok = True
        if prune and t > 0:
            for d in range(t):
                ps = prev_same[idx[d]]
                if ps >= 0 and not chosen[ps]:
                    ok = False
            if ok:
                lim = _limit(INF, ti, gkey[0], mult)
                ok = _child_ok(S, FS, t - 1, idx[t - 1], V, F, kf - t, npair, LO, HI, CHI, minc, obj, True, lim)
        if ok:
            d = t
            nxt[d] = idx[d - 1] + 1 if d > 0 else 0
            while True:
                if d == kf - 1:
                    # last pick: score every remaining patient directly
                    j0 = nxt[d]
                    nev += n - j0
                    if obj == OBJ_STD:
                        # f(S + v) = f(S) + f(v) + 2 * (C * S.v - sum(S) * sum(v)) = fS + fv + w.v
                        tS = 0
                        for c in range(C):
                            tS += S[d, c]
                        fS = 0
                        for c in range(C):
                            w[c] = 2 * (C * S[d, c] - tS)
                            fS += S[d, c] * S[d, c]
                        fS = C * fS - tS * tS
                        m = INF
                        mj = -1
                        if minc > 0:
                            for c in range(C):
                                need[c] = minc - S[d, c]
                            for j in range(j0, n):
                                feas = True
                                for c in range(C):
                                    if V[j, c] < need[c]:
                                        feas = False
                                if feas:
                                    f = fv[j]
                                    for c in range(C):
                                        f += w[c] * V[j, c]
                                    if f < m:
                                        m = f
                                        mj = j
                        else:
                            for j in range(j0, n):
                                f = fv[j]
                                for c in range(C):
                                    f += w[c] * V[j, c]
                                if f < m:
                                    m = f
                                    mj = j
                        if mj >= 0:
                            m += fS
                    else:
                        m = INF
                        mj = -1
                        for j in range(j0, n):
                            feas = True
                            for c in range(C):
                                x[c] = S[d, c] + V[j, c]
                                if x[c] < minc:
                                    feas = False
                            if feas:
                                f = objective_int(x, obj)
                                if f < m:
                                    m = f
                                    mj = j
                    if mj >= 0 and m < lbest:
                        lbest = m
                        for e in range(kf - 1):
                            out_combo[ti, e] = idx[e]
                        out_combo[ti, kf - 1] = mj
                        key = m * mult + ti if mult > 1 else m
                        if key < gkey[0]:
                            gkey[0] = key
                    d -= 1
                    if d < t:
                        break
                    chosen[idx[d]] = False
                    continue
                j = nxt[d]
                if j > n - (kf - d):
                    d -= 1
                    if d < t:
                        break
                    chosen[idx[d]] = False
                    continue
                nxt[d] = j + 1
                if prune:
                    ps = prev_same[j]
                    if ps >= 0 and not chosen[ps]:
                        continue
                    nnodes += 1
                    lim = _limit(lbest, ti, gkey[0], mult)
                    if not _child_ok(S, FS, d, j, V, F, kf - d - 1, npair, LO, HI, CHI, minc, obj, False, lim):
                        continue
                for c in range(C):
                    S[d + 1, c] = S[d, c] + V[j, c]
                if prune:
                    for p in range(nf):
                        FS[d + 1, p] = FS[d, p] + F[j, p]
                idx[d] = j
                chosen[j] = True
                d += 1
                nxt[d] = j + 1
        for d in range(t):
            chosen[idx[d]] = False
        out_val[ti] = lbest
        out_eval[ti] = nev
        out_nodes[ti] = nnodes


@njit(cache=True)
def _limit(lbest, ti, key, mult):
    """Largest lower bound a subtree of task ti may have and still be searched: it must be able
    to beat the task's best (lb < lbest) and the shared key (see search_tasks)."""
    if mult > 1:
        g = (key - ti - 1) // mult if key < INF else INF
    else:
        g = key
    lim = lbest - 1 if lbest < INF else INF
    return g if g < lim else lim


@njit(cache=True)
def _child_ok(S, FS, d, j, V, F, r, npair, LO, HI, CHI, minc, obj, included, lim):
    """Is the lower bound of the subtree that adds patient j to node d's partial sum and then r
    more patients from positions > j at most `lim`, and can it meet min_test_per_class?
    included=True: S[d+1], FS[d+1] already hold the child's sums (task prefixes).
    Returns early as soon as the bound exceeds lim."""
    if lim < 0:
        return False
    C = V.shape[1]
    nf = F.shape[1]
    s = j + 1
    dd = d + 1 if included else d
    if minc > 0:
        for c in range(C):
            v = S[dd, c] + CHI[r, s, c]
            if not included:
                v += V[j, c]
            if v < minc:
                return False
    if obj == OBJ_STD:
        b = 0
        for p in range(npair):
            v = FS[dd, p]
            if not included:
                v += F[j, p]
            lo = v + LO[r, s, p]
            if lo > 0:
                b += lo * lo
            else:
                hi = v + HI[r, s, p]
                if hi < 0:
                    b += hi * hi
            if b > lim:
                return False
        b = 0
        # the h-form bound is ceil(b / C), and ceil(b / C) > lim  <=>  b > lim * C
        lc = lim * C if lim < INF // C else INF
        for p in range(npair, nf):
            v = FS[dd, p]
            if not included:
                v += F[j, p]
            lo = v + LO[r, s, p]
            if lo > 0:
                b += lo * lo
            else:
                hi = v + HI[r, s, p]
                if hi < 0:
                    b += hi * hi
            if b > lc:
                return False
        return True
    for p in range(npair):
        v = FS[dd, p]
        if not included:
            v += F[j, p]
        if v + LO[r, s, p] > lim or -(v + HI[r, s, p]) > lim:
            return False
    return True


@njit(cache=True)
def _score(v, minc, obj):
    viol = 0
    for c in range(v.shape[0]):
        if v[c] < minc:
            viol += minc - v[c]
    return viol, objective_int(v, obj)


@njit(cache=True, nogil=True)
def local_search(V, base, kf, minc, obj, start):
    """Best-improvement swap search from `start` (kf positions); returns (value, combination).

    Only used to seed the branch-and-bound with an achievable value; value INF if the final
    combination violates min_test_per_class. Minimises (total violation, objective).
    """
    n, C = V.shape
    inset = np.zeros(n, np.bool_)
    cur = start.copy()
    x = base.copy()
    for e in range(kf):
        inset[cur[e]] = True
        for c in range(C):
            x[c] += V[cur[e], c]
    y = np.zeros(C, np.int64)
    bv, bf = _score(x, minc, obj)
    while True:
        best_e = -1
        best_j = -1
        for e in range(kf):
            i = cur[e]
            for j in range(n):
                if inset[j]:
                    continue
                for c in range(C):
                    y[c] = x[c] - V[i, c] + V[j, c]
                v, f = _score(y, minc, obj)
                if v < bv or (v == bv and f < bf):
                    bv = v
                    bf = f
                    best_e = e
                    best_j = j
        if best_e < 0:
            break
        i = cur[best_e]
        inset[i] = False
        inset[best_j] = True
        cur[best_e] = best_j
        for c in range(C):
            x[c] += V[best_j, c] - V[i, c]
    cur.sort()
    if bv > 0:
        return INF, cur
    return bf, cur
