# Freeze repositories: no more pushes (and, by default, no deletes).
#
# For a release that must not change any more, or a repository under
# investigation.
#
# Parameters (data.yaml):
#   frozen_repositories:
#     repositories: ["acme/legacy-app", "archive/**"]   # glob, '/'-delimited
#     deny_deletes: true
package margo.admission.frozen_repositories

decision_points := {"push", "delete"}

params := object.get(data, ["params", "frozen_repositories"], {})

patterns := object.get(params, "repositories", [])

frozen_by := pattern if {
	some pattern in patterns
	glob.match(pattern, ["/"], input.request.repository)
}

blocked_kinds := {"push", "delete"} if object.get(params, "deny_deletes", true)

blocked_kinds := {"push"} if not object.get(params, "deny_deletes", true)

violations contains v if {
	input.kind in blocked_kinds
	pattern := frozen_by
	v := {
		"rule": "frozen-repository",
		"message": sprintf("repository %s is frozen (%q): %s refused", [input.request.repository, pattern, input.kind]),
		"path": "request.repository",
	}
}
