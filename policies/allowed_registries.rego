# Only packages whose components come from allowed registries.
#
# Every deploymentProfiles[].components[].properties.repository of a pushed
# Margo package must be an oci:// reference to a host on the allow-list.
#
# Parameters (data.yaml):
#   allowed_registries:
#     hosts: [registry.example.com, "*.corp.example"]   # glob, '.'-delimited; port included
#     require_oci: true                                  # non-oci:// repositories are refused
# An absent or empty `hosts` list switches the policy off.
package margo.admission.allowed_registries

decision_points := {"push"}

params := object.get(data, ["params", "allowed_registries"], {})

hosts := object.get(params, "hosts", [])

require_oci := object.get(params, "require_oci", true)

active if {
	input.kind == "push"
	count(hosts) > 0
}

# host of "oci://host[:port]/path", undefined for other schemes
oci_host(repository) := host if {
	startswith(repository, "oci://")
	rest := substring(repository, 6, -1)
	host := split(rest, "/")[0]
	host != ""
}

allowed(host) if {
	some pattern in hosts
	glob.match(pattern, ["."], host)
}

violations contains v if {
	active
	some i, profile in input.description.deploymentProfiles
	some j, component in profile.components
	repository := component.properties.repository
	host := oci_host(repository)
	not allowed(host)
	v := {
		"rule": "allowed-registries",
		"message": sprintf("component %q uses registry %q, which is not on the allow-list %v", [component.name, host, hosts]),
		"path": sprintf("deploymentProfiles[%d].components[%d].properties.repository", [i, j]),
	}
}

violations contains v if {
	active
	require_oci
	some i, profile in input.description.deploymentProfiles
	some j, component in profile.components
	repository := component.properties.repository
	not oci_host(repository)
	v := {
		"rule": "allowed-registries",
		"message": sprintf("component %q repository %q is not an oci://host/path reference", [component.name, repository]),
		"path": sprintf("deploymentProfiles[%d].components[%d].properties.repository", [i, j]),
	}
}
