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
SCENARIOS ?= default membership vrrp

.PHONY: help demo test bootstrap unit pyversions modules netns lint sanity molecule molecule-matrix images clean

help:
	@echo "make demo             deploy the relay onto a local container fleet and show it carries multicast"
	@echo "make test             every test suite (unit, modules, netns, lint, sanity, molecule) + summary"
	@echo "make bootstrap        install Debian packages and the Python tooling (.venv)"
	@echo "make unit|pyversions|modules|netns|lint|sanity   one suite (pyversions: relay unit tests on Python 3.6 to 3.13)"
	@echo "make molecule         molecule scenarios ($(SCENARIOS)) on RELEASES=$(RELEASES)"
	@echo "make molecule-matrix  the default scenario on bullseye, bookworm and trixie"
	@echo "make images           build the Debian test images (cached)"
	@echo "make clean            remove build output and any fleet left by an interrupted run"

bootstrap:
	scripts/bootstrap.sh

demo: bootstrap
	scripts/demo.sh

test: bootstrap
	scripts/run-tests.sh

unit pyversions modules netns lint sanity: bootstrap
	scripts/run-tests.sh $@

molecule: bootstrap
	MCP_MOLECULE_SCENARIOS="$(SCENARIOS)" MCP_MOLECULE_RELEASES="$(RELEASES)" scripts/run-tests.sh molecule

molecule-matrix: bootstrap
	MCP_MOLECULE_SCENARIOS=default MCP_MOLECULE_RELEASES=all scripts/run-tests.sh molecule

images: bootstrap
	scripts/build-images.sh $(RELEASES)

# Fleets are named mcp-*; an interrupted run may leave one behind.
clean:
	scripts/ensure-docker.sh
	for fleet in mcp-default mcp-members mcp-vrrp mcp-demo; do tests/fleet/fleet.sh down --name $$fleet; done
	rm -rf build
