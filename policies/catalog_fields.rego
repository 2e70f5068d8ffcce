# Required catalog fields beyond what the Margo schema requires.
#
# Operators who publish packages in a catalog want every package to name its
# license file and every organization to have a web site.
#
# Parameters (data.yaml):
#   catalog_fields:
#     require_license_file: true        # metadata.catalog.application.licenseFile
#     require_organization_site: true   # metadata.catalog.organization[].site
package margo.admission.catalog_fields

decision_points := {"push"}

params := object.get(data, ["params", "catalog_fields"], {})

description := input.description if input.kind == "push"

nonempty(value) if {
	is_string(value)
	trim_space(value) != ""
}

violations contains v if {
	object.get(params, "require_license_file", true)
	license := object.get(description, ["metadata", "catalog", "application", "licenseFile"], "")
	not nonempty(license)
	v := {
		"rule": "catalog-fields",
		"message": "the catalog must name a license file (metadata.catalog.application.licenseFile)",
		"path": "metadata.catalog.application.licenseFile",
	}
}

violations contains v if {
	object.get(params, "require_organization_site", true)
	organizations := object.get(description, ["metadata", "catalog", "organization"], [])
	some k, organization in organizations
	not nonempty(object.get(organization, "site", ""))
	v := {
		"rule": "catalog-fields",
		"message": sprintf("organization %q must have a site", [object.get(organization, "name", "")]),
		"path": sprintf("metadata.catalog.organization[%d].site", [k]),
	}
}
