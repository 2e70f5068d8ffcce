package margo.admission.frozen_repositories

cfg := {"repositories": ["acme/legacy-app", "archive/**"]}

req(kind, repository) := {"version": 1, "kind": kind, "request": {"method": "PUT", "repository": repository, "reference": "1.0.0", "route_kind": "app"}}

test_push_to_frozen_denied if {
	count(violations) == 1 with input as req("push", "acme/legacy-app") with data.params.frozen_repositories as cfg
}

test_glob_freezes_subtree if {
	count(violations) == 1 with input as req("push", "archive/2023/app") with data.params.frozen_repositories as cfg
}

test_push_elsewhere_allowed if {
	count(violations) == 0 with input as req("push", "acme/legacy-app-2") with data.params.frozen_repositories as cfg
}

test_pull_from_frozen_allowed if {
	count(violations) == 0 with input as req("pull", "acme/legacy-app") with data.params.frozen_repositories as cfg
}

test_delete_denied_by_default if {
	count(violations) == 1 with input as req("delete", "acme/legacy-app") with data.params.frozen_repositories as cfg
}

test_delete_allowed_when_configured if {
	count(violations) == 0 with input as req("delete", "acme/legacy-app")
		with data.params.frozen_repositories as object.union(cfg, {"deny_deletes": false})
}

test_nothing_frozen_by_default if {
	count(violations) == 0 with input as req("push", "acme/legacy-app") with data.params.frozen_repositories as {}
}
