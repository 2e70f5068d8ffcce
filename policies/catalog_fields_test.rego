package margo.admission.catalog_fields

push(catalog) := {"version": 1, "kind": "push", "description": {"id": "app", "metadata": {"catalog": catalog}}}

complete := {
	"application": {"licenseFile": "resources/license.pdf"},
	"organization": [{"name": "Acme", "site": "https://acme.example"}],
}

test_complete_catalog_passes if {
	count(violations) == 0 with input as push(complete)
}

test_missing_license_denied if {
	vs := violations with input as push({"organization": complete.organization})
	count(vs) == 1
	some v in vs
	v.path == "metadata.catalog.application.licenseFile"
}

test_blank_license_denied if {
	count(violations) == 1 with input as push({"application": {"licenseFile": "  "}, "organization": complete.organization})
}

test_organization_without_site_denied if {
	vs := violations with input as push({
		"application": complete.application,
		"organization": [{"name": "Acme", "site": "https://acme.example"}, {"name": "Partner"}],
	})
	count(vs) == 1
	some v in vs
	v.path == "metadata.catalog.organization[1].site"
	contains(v.message, "Partner")
}

test_requirements_can_be_disabled if {
	count(violations) == 0 with input as push({"organization": [{"name": "Acme"}]})
		with data.params.catalog_fields as {"require_license_file": false, "require_organization_site": false}
}

test_no_description_no_finding if {
	count(violations) == 0 with input as {"version": 1, "kind": "push", "request": {"route_kind": "component"}}
}

test_pull_ignored if {
	count(violations) == 0 with input as {"version": 1, "kind": "pull", "description": {}}
}
