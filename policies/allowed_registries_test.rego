package margo.admission.allowed_registries

params_fixture := {"hosts": ["registry.example.com", "*.corp.example"]}

push_with(repositories) := {
	"version": 1,
	"kind": "push",
	"description": {"id": "app", "deploymentProfiles": [{
		"id": "p1",
		"type": "compose",
		"components": [{"name": sprintf("c%d", [i]), "properties": {"repository": r, "revision": "1.0.0"}} |
			some i, r in repositories
		],
	}]},
}

test_allowed_hosts_pass if {
	count(violations) == 0 with input as push_with(["oci://registry.example.com/a/b", "oci://eu.corp.example/c"])
		with data.params.allowed_registries as params_fixture
}

test_foreign_host_denied if {
	vs := violations with input as push_with(["oci://registry.example.com/a", "oci://docker.io/evil/app"])
		with data.params.allowed_registries as params_fixture
	count(vs) == 1
	some v in vs
	v.path == "deploymentProfiles[0].components[1].properties.repository"
	contains(v.message, "docker.io")
}

test_glob_does_not_cross_dots if {
	count(violations) == 1 with input as push_with(["oci://a.b.corp.example/x"])
		with data.params.allowed_registries as params_fixture
}

test_non_oci_denied if {
	count(violations) == 1 with input as push_with(["https://charts.example.com/app"])
		with data.params.allowed_registries as params_fixture
}

test_non_oci_allowed_when_not_required if {
	count(violations) == 0 with input as push_with(["https://charts.example.com/app"])
		with data.params.allowed_registries as {"hosts": ["registry.example.com"], "require_oci": false}
}

test_port_is_part_of_host if {
	count(violations) == 1 with input as push_with(["oci://registry.example.com:5000/a"])
		with data.params.allowed_registries as params_fixture
}

test_inactive_without_hosts if {
	count(violations) == 0 with input as push_with(["oci://docker.io/evil/app"])
		with data.params.allowed_registries as {}
}

test_pull_ignored if {
	count(violations) == 0 with input as {"kind": "pull", "version": 1}
		with data.params.allowed_registries as params_fixture
}
