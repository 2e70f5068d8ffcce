# Maximum resources a deployment profile may request.
#
# Each deploymentProfiles[].requiredResources.cpu.cores and .memory of a pushed
# Margo package must stay within the configured maximum (edge devices are small).
#
# Parameters (data.yaml):
#   max_resources:
#     cpu_cores: 4       # maximum cpu.cores per profile
#     memory: 8Gi        # maximum memory per profile (Ki, Mi, Gi)
# Each limit applies only when set.
package margo.admission.max_resources

decision_points := {"push"}

params := object.get(data, ["params", "max_resources"], {})

profiles := input.description.deploymentProfiles if input.kind == "push"

memory_pattern := `^[0-9]+(Ki|Mi|Gi)$`

violations contains v if {
	max := params.cpu_cores
	some i, profile in profiles
	cores := profile.requiredResources.cpu.cores
	is_number(cores)
	cores > max
	v := {
		"rule": "max-resources",
		"message": sprintf("profile %q requests %v CPU cores, more than the %v allowed", [profile.id, cores, max]),
		"path": sprintf("deploymentProfiles[%d].requiredResources.cpu.cores", [i]),
	}
}

violations contains v if {
	max := params.memory
	some i, profile in profiles
	memory := profile.requiredResources.memory
	regex.match(memory_pattern, memory)
	units.parse(memory) > units.parse(max)
	v := {
		"rule": "max-resources",
		"message": sprintf("profile %q requests %s of memory, more than the %s allowed", [profile.id, memory, max]),
		"path": sprintf("deploymentProfiles[%d].requiredResources.memory", [i]),
	}
}

# A value the limit cannot be checked against must not slip through.
violations contains v if {
	params.memory
	some i, profile in profiles
	memory := profile.requiredResources.memory
	not regex.match(memory_pattern, memory)
	v := {
		"rule": "max-resources",
		"message": sprintf("profile %q memory %v is not a quantity like 512Mi", [profile.id, memory]),
		"path": sprintf("deploymentProfiles[%d].requiredResources.memory", [i]),
	}
}
