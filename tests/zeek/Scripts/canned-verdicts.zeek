# Canned verdicts for the flows of the small scan trace, shared by the
# results and packed-results btests (loaded on their command lines).

# Verdicts by shape, so that the baseline shows each notice path:
# short flows are scans (over the threshold), one flow is a VPN, one a
# brute force below its threshold, and every flow carries an extra task.
function canned(f: Multa::Flow, i: count): Multa::Result
	{
	local threat = |f$sizes| <= 2 ? "scan" : "benign";
	local threat_score = |f$sizes| <= 2 ? 0.95 : 0.99;
	local tunnel = "none";
	local tunnel_score = 0.99;

	if ( i == 3 )
		{
		tunnel = "vpn";
		tunnel_score = 0.97;
		}

	if ( i == 4 )
		{
		threat = "bruteforce";
		threat_score = 0.5;
		}

	return Multa::Result($uid=f$uid, $model="canned-1",
	    $tasks=vector("service", "encrypted", "tunnel", "threat", "qos"),
	    $labels=vector(f$resp_p == 80/tcp ? "http" : "other", "cleartext", tunnel, threat, "bulk"),
	    $scores=vector(0.8, 0.7, tunnel_score, threat_score, 0.25));
	}
