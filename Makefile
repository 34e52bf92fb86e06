# The two commands of the README, and the finer steps they are made of.
#   make demo   install what is needed, build a 4-container fleet, deploy the
#               relay with ansible-playbook, send a stream, print what each
#               member received, tear the fleet down
#   make test   every test suite, then a summary (non-zero exit on failure)
# Run as root on Debian 12 (docker, nftables and network namespaces need it).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# Debian releases of the test images: make molecule RELEASES="bullseye trixie"
RELEASES ?= bookworm
SCENARIOS ?= default membership vrrp dynamic

.PHONY: help demo test bootstrap unit pyversions modules netns netns-pyversions lint sanity ansible-matrix molecule molecule-matrix images changelog clean

help:
	@echo "make demo             deploy the relay onto a local container fleet and show it carries multicast"
	@echo "make test             every test suite (unit, pyversions, modules, netns, netns-pyversions, lint, sanity, ansible-matrix, molecule, molecule-matrix) + summary"
	@echo "make bootstrap        install Debian packages and the Python tooling (.venv)"
	@echo "make unit|pyversions|modules|netns|lint|sanity|ansible-matrix   one suite (pyversions: relay unit tests on Python 3.6 to 3.13; ansible-matrix: modules and sanity on ansible-core 2.16 to 2.18)"
	@echo "make molecule         molecule scenarios ($(SCENARIOS)) on RELEASES=$(RELEASES)"
	@echo "make molecule-matrix  the default scenario (no key rotation) on bullseye with ansible-core 2.16 and on trixie"
	@echo "make netns-pyversions the namespace tests with the relay on Python 3.6 and 3.13"
	@echo "make images           build the Debian test images (cached)"
	@echo "make changelog        fold changelogs/fragments into the release of galaxy.yml's version (CHANGELOG.md)"
	@echo "make clean            remove build output and any fleet left by an interrupted run"

bootstrap:
	scripts/bootstrap.sh

demo: bootstrap
	scripts/demo.sh

test: bootstrap
	scripts/run-tests.sh

unit pyversions modules netns lint sanity ansible-matrix: bootstrap
	scripts/run-tests.sh $@

molecule: bootstrap
	MCP_MOLECULE_SCENARIOS="$(SCENARIOS)" MCP_MOLECULE_RELEASES="$(RELEASES)" scripts/run-tests.sh molecule

molecule-matrix netns-pyversions: bootstrap
	scripts/run-tests.sh $@

images: bootstrap
	scripts/build-images.sh $(RELEASES)

# At release time, after setting galaxy.yml's version: lint the fragments, add
# them to changelogs/changelog.yaml as that version's section (new modules,
# plugins and roles are found with ansible-doc, hence the collection path that
# scripts/run-lint.sh also uses) and render CHANGELOG.md. Needs only .venv.
# Re-runnable: the section is rebuilt from the fragments and from a fresh
# ansible-doc scan each time (changelogs/config.yaml, --reload-plugins).
changelog:
	.venv/bin/antsibull-changelog lint
	mkdir -p .cache/lint-collections/ansible_collections/multicast
	ln -sfn "$(CURDIR)" .cache/lint-collections/ansible_collections/multicast/proxy
	PATH="$(CURDIR)/.venv/bin:$$PATH" ANSIBLE_COLLECTIONS_PATH="$(CURDIR)/.cache/lint-collections" \
		.venv/bin/antsibull-changelog release --reload-plugins

# Fleets are named mcp-*; an interrupted run may leave one behind.
clean:
	scripts/ensure-docker.sh
	for fleet in mcp-default mcp-members mcp-vrrp mcp-demo; do tests/fleet/fleet.sh down --name $$fleet; done
	rm -rf build
