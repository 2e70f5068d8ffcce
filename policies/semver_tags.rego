# No `latest` and no non-SemVer tags.
#
# A tag push to an `app` or `component` route must use a SemVer 2.0 tag without a
# leading `v` (Margo ties tags to metadata.version / org.margo.component.version),
# and the components a Margo package references must be pinned to SemVer revisions.
#
# Parameters (data.yaml):
#   semver_tags:
#     route_kinds: [app, component]   # where the tag rule applies
#     check_revisions: true           # also check components[].properties.revision
package margo.admission.semver_tags

decision_points := {"push"}

params := object.get(data, ["params", "semver_tags"], {})

route_kinds := object.get(params, "route_kinds", ["app", "component"])

check_revisions := object.get(params, "check_revisions", true)

applies if {
	input.kind == "push"
	input.request.route_kind in route_kinds
}

violations contains v if {
	applies
	input.request.tag == "latest"
	v := {
		"rule": "semver-tags",
		"message": "the tag latest is not allowed: tag every version with its SemVer version",
		"path": "request.tag",
	}
}

violations contains v if {
	applies
	tag := input.request.tag
	tag != "latest"
	not semver.is_valid(tag)
	v := {
		"rule": "semver-tags",
		"message": sprintf("tag %q is not a SemVer 2.0 version (e.g. 1.2.3, without a leading v)", [tag]),
		"path": "request.tag",
	}
}

violations contains v if {
	applies
	check_revisions
	some i, profile in input.description.deploymentProfiles
	some j, component in profile.components
	revision := object.get(component, ["properties", "revision"], "")
	not semver.is_valid(revision)
	v := {
		"rule": "semver-tags",
		"message": sprintf("component %q revision %q is not a SemVer 2.0 version", [component.name, revision]),
		"path": sprintf("deploymentProfiles[%d].components[%d].properties.revision", [i, j]),
	}
}
