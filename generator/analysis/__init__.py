"""Causal and attribution analyses of the heads the atlas labels.

The atlas itself (``generator.patterns`` / ``generator.scoring``) says what
each head *looks at*; this package measures what each head *does* for a
scalar objective, with computation only (no I/O, no rendering):

* :mod:`generator.analysis.objective`   the scalar objectives (sentence
  similarity, masked-LM pseudo-log-likelihood, classification accuracy);
* :mod:`generator.analysis.importance`  head masking, ablation importance
  with bootstrap intervals, Michel et al. (2019) gradient importance, their
  like-for-like rank correlation, the "hurts most" ordering and group masking;
* :mod:`generator.analysis.attribution` integrated gradients of the
  similarity of one pair (Sundararajan et al. 2017, with captum);
* :mod:`generator.analysis.perturbed`   Wu et al. (2020) whole-word
  perturbed-masking impact matrix of one pair, and whether a checkpoint has
  the masked-LM head that reading needs;
* :mod:`generator.analysis.headmap`     Clark et al. (2019) Jensen-Shannon
  distances between heads and their 2-D MDS map.

Heads are always ``(layer, head)`` with 0-based indices; arrays over heads
are ``[layers, heads]`` or, flattened, layer-major ``[layers * heads]``.

Extra dependencies of this package: ``captum`` (attribution), ``scipy``
(Spearman correlation) and ``scikit-learn`` (MDS). Each is imported only by
the function that needs it.
"""
