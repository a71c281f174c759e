"""The technical-documentation pack of one version (EU AI Act Annex IV, Articles 12 and 14).

``pack.build`` gathers the facts every app holds about a version into one plain dict, cut at an
audit sequence number; ``render`` turns it into canonical JSON, HTML or PDF bytes. It lives in the
console (the top layer) because it reads registry, governance, monitoring, serving and incidents.
"""
