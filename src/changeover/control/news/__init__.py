"""News per image and branch: entries an admin posts (or a branch move posts), published as
an Atom feed beside the content tree (``docs/news.md``)."""
