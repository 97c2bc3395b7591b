# Manager (also logger) and two workers on localhost, ports from btest's
# @TEST-PORT (BROKER_MANAGER_PORT, BROKER_WORKER1_PORT, BROKER_WORKER2_PORT).
redef Cluster::manager_is_logger = T;

redef Cluster::nodes = {
	["manager"] = [$node_type=Cluster::MANAGER, $ip=127.0.0.1, $p=to_port(getenv("BROKER_MANAGER_PORT"))],
	["worker-1"] = [$node_type=Cluster::WORKER, $ip=127.0.0.1, $p=to_port(getenv("BROKER_WORKER1_PORT")), $manager="manager"],
	["worker-2"] = [$node_type=Cluster::WORKER, $ip=127.0.0.1, $p=to_port(getenv("BROKER_WORKER2_PORT")), $manager="manager"],
};
