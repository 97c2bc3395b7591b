##! Turns the bridge's results into multa.log rows and the
##! :zeek:see:`Multa::classified` event.
##!
##! A result is matched to the flow this node sent by uid; a result for a
##! uid this node did not send, or sent longer than
##! :zeek:see:`Multa::result_timeout` ago, is dropped and counted
##! (zeek_multa_dropped_total{reason="unknown_uid"}). A malformed result
##! (task, label and score vectors of different lengths) is dropped with a
##! reporter warning; Zeek itself refuses events whose types do not match.

@load ./main
@load ./collect

module Multa;

export {
	## Label of *task* in *r*, or "" when *r* has no such task.
	global label_of: function(r: Result, task: string): string;

	## Score of *task* in *r*, or -1.0 when *r* has no such task.
	global score_of: function(r: Result, task: string): double;

	## Builds the multa.log record for *r* about the flow with endpoints
	## *id*, first packet at *ts* and *packets* packets.
	global make_info: function(r: Result, id: conn_id, ts: time, packets: count): Info;

	## Raises the notices a logged verdict calls for (notices.zeek).
	global raise_notices: function(info: Info);
}

function label_of(r: Result, task: string): string
	{
	for ( i, t in r$tasks )
		{
		if ( t == task )
			return r$labels[i];
		}

	return "";
	}

function score_of(r: Result, task: string): double
	{
	for ( i, t in r$tasks )
		{
		if ( t == task )
			return r$scores[i];
		}

	return -1.0;
	}

function make_info(r: Result, id: conn_id, ts: time, packets: count): Info
	{
	local t = r$tasks;

	# The bridge sends the default model's four tasks in this order: one
	# constructor instead of a loop over the tasks.
	if ( |t| == 4 && t[0] == "service" && t[1] == "encrypted" && t[2] == "tunnel"
	     && t[3] == "threat" )
		{
		local l = r$labels;
		local s = r$scores;
		return Info($ts=ts, $uid=r$uid, $id=id, $packets=packets, $model=r$model,
		    $service=l[0], $service_score=s[0], $encrypted=l[1], $encrypted_score=s[1],
		    $tunnel=l[2], $tunnel_score=s[2], $threat=l[3], $threat_score=s[3]);
		}

	local info = Info($ts=ts, $uid=r$uid, $id=id, $packets=packets, $model=r$model);

	for ( i, task in r$tasks )
		{
		local label = r$labels[i];
		local score = r$scores[i];

		switch ( task ) {
		case "service":
			info$service = label;
			info$service_score = score;
			break;
		case "encrypted":
			info$encrypted = label;
			info$encrypted_score = score;
			break;
		case "tunnel":
			info$tunnel = label;
			info$tunnel_score = score;
			break;
		case "threat":
			info$threat = label;
			info$threat_score = score;
			break;
		default:
			if ( ! info?$extra_tasks )
				{
				info$extra_tasks = vector();
				info$extra_labels = vector();
				info$extra_scores = vector();
				}

			info$extra_tasks += task;
			info$extra_labels += label;
			info$extra_scores += score;
			break;
		}
		}

	return info;
	}

# Tells the offline mode (trace.zeek) that a result arrived.
global result_handled: event();

type ResultVector: vector of Result;

function handle_results(results: vector of Result)
	{
	Telemetry::counter_inc(results_counter, |results| + 0.0);

	# One result per flow: the loop body is inlined, no call per result.
	for ( _, r in results )
		{
		if ( |r$labels| != |r$tasks| || |r$scores| != |r$tasks| )
			{
			Reporter::warning(fmt("multa: dropped result for %s: %d tasks, %d labels, %d scores",
			    r$uid, |r$tasks|, |r$labels|, |r$scores|));
			count_dropped("malformed_result");
			next;
			}

		if ( r$uid !in inflight )
			{
			count_dropped("unknown_uid");
			next;
			}

		local f = inflight[r$uid];
		delete inflight[r$uid];

		local info = make_info(r, conn_id($orig_h=f$orig_h, $orig_p=f$orig_p,
		    $resp_h=f$resp_h, $resp_p=f$resp_p), f$ts, |f$sizes|);

		if ( ! hook verdict_policy(info, r) )
			next;

		Log::write(Multa::LOG, info);
		# A call, not a handler of Multa::classified: that event costs
		# nothing when no user script handles it.
		raise_notices(info);
		event Multa::classified(info, r);
		}

	event result_handled();
	}

event Multa::results(results: vector of Result)
	{
	handle_results(results);
	}

event Multa::packed_results(version: count, results: string)
	{
	# from_json builds the records in C++: two values on the wire for the
	# whole batch instead of about 18 per result.
	local parsed = version == PACKED_RESULT_VERSION ? from_json(results, ResultVector)
	    : from_json_result($valid=F, $err=fmt("version %d, this package reads %d", version,
	                                          PACKED_RESULT_VERSION));

	if ( ! parsed$valid )
		{
		Reporter::warning(fmt("multa: dropped a packed_results batch: %s",
		    parsed?$err ? parsed$err : "not valid JSON"));
		count_dropped("malformed_result");
		event result_handled();
		return;
		}

	handle_results(parsed$v as ResultVector);
	}
