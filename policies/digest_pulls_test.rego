package margo.admission.digest_pulls

cfg := {"groups": ["production-fleet"], "repositories": ["acme/**"]}

pull(reference, groups) := {
	"version": 1,
	"kind": "pull",
	"request": object.union(
		{"method": "GET", "repository": "acme/app", "reference": reference, "route_kind": "app"},
		ref_field(reference),
	),
	"identity": {"subject": "wfm", "groups": groups},
}

ref_field(reference) := {"digest": reference} if contains(reference, ":")

ref_field(reference) := {"tag": reference} if not contains(reference, ":")

test_group_pull_by_digest_allowed if {
	count(violations) == 0 with input as pull("sha256:0123", ["production-fleet"]) with data.params.digest_pulls as cfg
}

test_group_pull_by_tag_denied if {
	vs := violations with input as pull("1.0.0", ["dev", "production-fleet"]) with data.params.digest_pulls as cfg
	count(vs) == 1
	some v in vs
	contains(v.message, "production-fleet")
}

test_other_group_by_tag_allowed if {
	count(violations) == 0 with input as pull("1.0.0", ["dev"]) with data.params.digest_pulls as cfg
}

test_anonymous_by_tag_allowed if {
	count(violations) == 0 with input as pull("1.0.0", []) with data.params.digest_pulls as cfg
}

test_other_repository_not_concerned if {
	base := pull("1.0.0", ["production-fleet"])
	inp := object.union(base, {"request": object.union(base.request, {"repository": "other/app"})})
	count(violations) == 0 with input as inp with data.params.digest_pulls as cfg
}

test_push_ignored if {
	inp := object.union(pull("1.0.0", ["production-fleet"]), {"kind": "push"})
	count(violations) == 0 with input as inp with data.params.digest_pulls as cfg
}
