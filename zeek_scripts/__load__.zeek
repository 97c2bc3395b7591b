##! multa: per-connection packet sequences to an external multi-task
##! classifier, verdicts back into multa.log and notices. See docs/zeek.md.
##! ``offline.zeek`` is not loaded here: it is for ``zeek -r`` only.

@load ./main
@load ./collect
@load ./transport
@load ./results
@load ./notices
@load ./trace
