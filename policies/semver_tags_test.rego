package margo.admission.semver_tags

push(tag, route_kind) := {
	"version": 1,
	"kind": "push",
	"request": {"method": "PUT", "repository": "acme/app", "reference": tag, "tag": tag, "route_kind": route_kind},
}

test_semver_tag_allowed if {
	count(violations) == 0 with input as push("1.2.3", "app")
}

test_prerelease_allowed if {
	count(violations) == 0 with input as push("1.2.3-rc.1+build.5", "component")
}

test_latest_denied if {
	some v in violations with input as push("latest", "app")
	contains(v.message, "latest")
}

test_v_prefix_denied if {
	count(violations) == 1 with input as push("v1.2.3", "app")
}

test_non_semver_denied if {
	count(violations) == 1 with input as push("1.2", "component")
}

test_passthrough_not_checked if {
	count(violations) == 0 with input as push("latest", "passthrough")
}

test_digest_push_allowed if {
	count(violations) == 0 with input as {
		"version": 1,
		"kind": "push",
		"request": {"method": "PUT", "repository": "acme/app", "reference": "sha256:abc", "digest": "sha256:abc", "route_kind": "app"},
	}
}

test_component_revision_checked if {
	inp := object.union(push("1.0.0", "app"), {"description": {"deploymentProfiles": [{"components": [
		{"name": "ok", "properties": {"repository": "oci://r/a", "revision": "2.0.0"}},
		{"name": "bad", "properties": {"repository": "oci://r/b", "revision": "latest"}},
	]}]}})
	vs := violations with input as inp
	count(vs) == 1
	some v in vs
	v.path == "deploymentProfiles[0].components[1].properties.revision"
}

test_revision_check_can_be_disabled if {
	inp := object.union(push("1.0.0", "app"), {"description": {"deploymentProfiles": [{"components": [{"name": "bad", "properties": {"revision": "main"}}]}]}})
	count(violations) == 0 with input as inp with data.params.semver_tags as {"check_revisions": false}
}
