"""Applications on top of the library: the ``bayes-recon`` command line, the one
method registry (:mod:`.methods`, shared by the command line, the demo and
studies), the demo, run folders and benchmark helpers.

Nothing in ``bayes_recon`` below this subpackage imports it.
"""
