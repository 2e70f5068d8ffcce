package margo.admission.denied_ids

push(id) := {"version": 1, "kind": "push", "description": {"id": id}}

test_listed_id_denied if {
	vs := violations with input as push("malware-miner") with data.params.denied_ids as {"ids": ["malware-miner"]}
	count(vs) == 1
	some v in vs
	v.path == "id"
}

test_reason_is_reported if {
	some v in violations with input as push("malware-miner")
		with data.params.denied_ids as {"ids": ["malware-miner"], "reasons": {"malware-miner": "withdrawn"}}
	contains(v.message, "withdrawn")
}

test_other_id_allowed if {
	count(violations) == 0 with input as push("good-app") with data.params.denied_ids as {"ids": ["malware-miner"]}
}

test_empty_list_allows if {
	count(violations) == 0 with input as push("malware-miner") with data.params.denied_ids as {}
}

test_push_without_description_ignored if {
	count(violations) == 0 with input as {"version": 1, "kind": "push"} with data.params.denied_ids as {"ids": ["x"]}
}
