"""The fallback of `distillbench run --fallback-suite`: another suite to run when none of the datasets
asked for can be loaded because openml.org cannot be reached and no cache or source holds them."""

from __future__ import annotations


def suite_fallback(entries, asked: str, replacement, cache: str | None, source: str | None) -> dict | None:
    """The fallback to record, when none of `entries` can be loaded because openml.org cannot be
    reached and neither the cache nor a source holds any of them; else None (the run goes as asked)."""
    from distillbench.datasets.builtin import ensure_builtin_source
    from distillbench.datasets.sources import SOURCE_ENV, OpenMLCache

    cache = OpenMLCache.resolve(cache, source)
    if any(cache.status(entry.dataset_id) != "missing" for entry in entries):
        return None
    problem = cache.unreachable()
    if problem is None:
        return None
    source = ensure_builtin_source(cache.root)  # the builtin source, used whatever the fallback suite
    what = "datasets bundled with scikit-learn" if replacement.name == "builtin" else replacement.description
    named = asked if asked.startswith("--") else f"suite {asked}"
    holds = (
        f"neither the cache {cache.root} nor the source {cache.source} holds any dataset of {named}"
        if cache.source
        else f"no source is set and the cache {cache.root} holds no dataset of {named}"
    )
    return {
        "from": asked,
        "to": replacement.name,
        "source": str(source),
        "reason": f"{problem}; {holds}",
        "requested": [entry.dataset_id for entry in entries],
        "message": f"{problem.split(' (')[0]} and no OpenML cache holds {named}: running suite {replacement.name} "
        f"({what}) instead; to run {named} offline, point --openml-source or {SOURCE_ENV} at an "
        f"OpenML cache (e.g. ../shared/openml-cache, or one made where online with "
        f"`distillbench datasets prefetch --suite NAME --cache DIR`)",
    }
