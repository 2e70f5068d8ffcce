package margo.admission.max_resources

limits := {"cpu_cores": 4, "memory": "8Gi"}

push(resources) := {"version": 1, "kind": "push", "description": {"deploymentProfiles": [
	{"id": "small", "requiredResources": {"cpu": {"cores": 1}, "memory": "512Mi"}},
	{"id": "big", "requiredResources": resources},
]}}

test_within_limits if {
	count(violations) == 0 with input as push({"cpu": {"cores": 4}, "memory": "8Gi"})
		with data.params.max_resources as limits
}

test_fractional_cores_within_limits if {
	count(violations) == 0 with input as push({"cpu": {"cores": 0.5}, "memory": "8192Mi"})
		with data.params.max_resources as limits
}

test_too_many_cores if {
	vs := violations with input as push({"cpu": {"cores": 4.5}})
		with data.params.max_resources as limits
	count(vs) == 1
	some v in vs
	v.path == "deploymentProfiles[1].requiredResources.cpu.cores"
}

test_too_much_memory if {
	vs := violations with input as push({"memory": "9Gi"})
		with data.params.max_resources as limits
	count(vs) == 1
	some v in vs
	v.path == "deploymentProfiles[1].requiredResources.memory"
}

test_unit_conversion if {
	count(violations) == 1 with input as push({"memory": "8388609Ki"})
		with data.params.max_resources as limits
}

test_unparseable_memory_denied if {
	count(violations) == 1 with input as push({"memory": "lots"})
		with data.params.max_resources as limits
}

test_no_limits_configured if {
	count(violations) == 0 with input as push({"cpu": {"cores": 64}, "memory": "1024Gi"})
		with data.params.max_resources as {}
}

test_only_cpu_limit if {
	count(violations) == 0 with input as push({"cpu": {"cores": 2}, "memory": "1024Gi"})
		with data.params.max_resources as {"cpu_cores": 2}
}
