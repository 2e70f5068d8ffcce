# A deny-list of Margo package ids.
#
# Refuses a Margo Application Package whose top-level `id` is listed (a
# withdrawn application, a name reserved for another vendor).
#
# Parameters (data.yaml):
#   denied_ids:
#     ids: [malware-miner]
#     reasons: {malware-miner: "withdrawn after incident 42"}   # optional
package margo.admission.denied_ids

decision_points := {"push"}

params := object.get(data, ["params", "denied_ids"], {})

violations contains v if {
	input.kind == "push"
	id := input.description.id
	id in object.get(params, "ids", [])
	reason := object.get(object.get(params, "reasons", {}), id, "the id is on the deny-list")
	v := {
		"rule": "denied-ids",
		"message": sprintf("application id %q is not accepted: %s", [id, reason]),
		"path": "id",
	}
}
