##! Notices from verdicts: per-flow threats and tunnels, and per-source
##! aggregates of scan and brute-force flows (SumStats, so in a cluster
##! the manager counts what every worker saw).

@load base/frameworks/notice
@load base/frameworks/sumstats
@load ./main
@load ./results

module Multa;

export {
	## Score a threat class needs for a notice.
	global threat_threshold: function(label: string): double;
}

function threat_threshold(label: string): double
	{
	return label in threat_thresholds ? threat_thresholds[label] : default_threat_threshold;
	}

function suppression_left(t: table[Notice::Type, string] of time, note: Notice::Type,
    identifier: string): interval
	{
	return t[note, identifier] - network_time();
	}

# Threat and Tunnel identifiers the Notice framework is suppressing, until
# when, so that a suppressed notice is not even built: a scanner's flows
# would otherwise each build a notice, its message and identifier, only
# for NOTICE() to drop it. Filled from the notices this node raises and
# from Notice::begin_suppression (which a cluster shares). Notices skipped
# here raise no Notice::suppressed.
global suppressed_until: table[Notice::Type, string] of time
	&create_expire=0 secs &expire_func=suppression_left;

event Notice::begin_suppression(ts: time, suppress_for: interval, note: Notice::Type,
    identifier: string)
	{
	if ( note == Threat || note == Tunnel )
		suppressed_until[note, identifier] = ts + suppress_for;
	}

function suppressed(note: Notice::Type, identifier: string): bool
	{
	return [note, identifier] in suppressed_until
	    && suppressed_until[note, identifier] > network_time();
	}

# NOTICE() fills in n's time and suppression interval (after the policy
# hooks); Notice::notice then suppresses its identifier for that long.
function raise(n: Notice::Info)
	{
	NOTICE(n);

	if ( n$suppress_for > 0 secs )
		suppressed_until[n$note, n$identifier] = n$ts + n$suppress_for;
	}

function describe(info: Info): string
	{
	return fmt("%s:%s -> %s:%s (model %s)", info$id$orig_h, info$id$orig_p,
	    info$id$resp_h, info$id$resp_p, info$model);
	}

function threat_notice(info: Info)
	{
	local label = info$threat;
	local host_level = label in host_classes;
	local identifier = host_level ? cat(info$id$orig_h, label)
	    : label in target_classes ? cat(info$id$resp_h, label)
	    : cat(info$id$orig_h, info$id$resp_h, label);

	if ( ! suppressed(Threat, identifier) )
		raise(Notice::Info($note=Threat,
		    $msg=fmt("%s flow %s, score %.3f", label, describe(info), info$threat_score),
		    $sub=label, $uid=info$uid, $id=info$id,
		    $src=info$id$orig_h, $dst=info$id$resp_h, $p=info$id$resp_p,
		    $identifier=identifier));

	if ( host_level )
		SumStats::observe("multa.threat_source",
		    SumStats::Key($host=info$id$orig_h, $str=label),
		    SumStats::Observation($str=cat(info$id$resp_h, "/", info$id$resp_p)));
	}

function tunnel_notice(info: Info)
	{
	local label = info$tunnel;
	local identifier = cat(info$id$orig_h, info$id$resp_h, info$id$resp_p, label);

	if ( suppressed(Tunnel, identifier) )
		return;

	raise(Notice::Info($note=Tunnel,
	    $msg=fmt("%s flow %s, score %.3f", label, describe(info), info$tunnel_score),
	    $sub=label, $uid=info$uid, $id=info$id,
	    $src=info$id$orig_h, $dst=info$id$resp_h, $p=info$id$resp_p,
	    $identifier=identifier));
	}

function raise_notices(info: Info)
	{
	if ( info?$threat && info$threat !in benign_threat_classes
	     && info$threat_score >= threat_threshold(info$threat) )
		threat_notice(info);

	if ( info?$tunnel && info$tunnel in tunnel_classes
	     && info$tunnel_score >= tunnel_threshold )
		tunnel_notice(info);
	}

event zeek_init()
	{
	local r1 = SumStats::Reducer($stream="multa.threat_source",
	    $apply=set(SumStats::UNIQUE));

	SumStats::create(SumStats::SumStat($name="multa-threat-source",
	    $epoch=host_window,
	    $reducers=set(r1),
	    # Scaled so that Multa::host_threshold can change at run time.
	    $threshold_val(key: SumStats::Key, result: SumStats::Result) = {
		return result["multa.threat_source"]$num / (host_threshold + 0.0);
	    },
	    $threshold=1.0,
	    $threshold_crossed(key: SumStats::Key, result: SumStats::Result) = {
		local rr = result["multa.threat_source"];
		NOTICE(Notice::Info($note=Threat_Source,
		    $msg=fmt("%s sent %d %s flows to %d destinations within %s",
		             key$host, rr$num, key$str, rr$unique, host_window),
		    $sub=key$str, $src=key$host, $n=rr$num,
		    $identifier=cat(key$host, key$str)));
	    }));
	}
