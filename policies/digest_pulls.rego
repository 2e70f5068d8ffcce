# Pulls only by digest for some groups.
#
# Members of the listed groups (e.g. the production fleet managers) must pull
# manifests by digest, so what they deploy cannot change under a moving tag.
#
# Parameters (data.yaml):
#   digest_pulls:
#     groups: [production-fleet]     # identity.groups that must pull by digest
#     repositories: ["**"]           # glob ('/'-delimited) of repositories concerned
package margo.admission.digest_pulls

decision_points := {"pull"}

params := object.get(data, ["params", "digest_pulls"], {})

groups := object.get(params, "groups", [])

repositories := object.get(params, "repositories", ["**"])

concerned_group := group if {
	input.kind == "pull"
	not input.request.digest
	some group in input.identity.groups
	group in groups
}

concerned_repository if {
	some pattern in repositories
	glob.match(pattern, ["/"], input.request.repository)
}

violations contains v if {
	group := concerned_group
	concerned_repository
	v := {
		"rule": "digest-pulls",
		"message": sprintf("members of group %q must pull %s by digest, not by tag %q", [group, input.request.repository, input.request.reference]),
		"path": "request.reference",
	}
}
