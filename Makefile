# Every target creates .venv from requirements-dev.txt by itself, so a fresh clone needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo try audit suggest test quick bench burst mutate trace lint scan format package deploy stackset smoke clean

$(BIN)/activate: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(BIN)/activate

demo: $(BIN)/activate
	$(BIN)/python tests/demo.py

# make try EVENT=events/ssh-from-anywhere.json (or EVENT="my-events/*.json"): each saved
# event is made again on the embedded AWS, in a group of its own, and handed to the function.
try: $(BIN)/activate
	@test -n "$(EVENT)" || { echo "usage: make try EVENT=file.json [EVENT=\"a.json b.json\"]"; exit 2; }
	$(BIN)/python tests/demo.py --try $(EVENT)

# make audit [FORMAT=json|csv]: the demo's groups on the embedded AWS, judged by the function's
# audit (python lambda_function.py --audit) as if each rule had just been added; make suggest:
# the ALLOWED_RULES entries that would keep them.
audit: $(BIN)/activate
	$(BIN)/python tests/demo.py --audit $(if $(FORMAT),--format $(FORMAT))

suggest: $(BIN)/activate
	$(BIN)/python tests/demo.py --audit --suggest

bench: $(BIN)/activate bench/.venv-custodian/bin/activate
	$(BIN)/python bench/bench.py

# The bad day: a thousand changes in minutes against EC2's throttling (bench/BURST.md).
burst: $(BIN)/activate
	$(BIN)/python bench/burst.py

# A sampled mutation check of the reading and deciding code (docs/mutation.md), some 15
# minutes on 2 cores; not part of make test. make mutate N=60 SEED=1234 to choose the draw.
mutate: $(BIN)/activate
	$(BIN)/python bench/mutate.py $(if $(N),-n $(N)) $(if $(SEED),--seed $(SEED))

# Where one plain Authorize runs in lambda_function.py: functions, lines, span, jumps, and the
# size of each section (tests/test_default_path.py holds the layout).
trace: $(BIN)/activate
	$(BIN)/python bench/trace_path.py

# The peer gets its own virtualenv; if it cannot install, the benchmark leaves it out.
bench/.venv-custodian/bin/activate: bench/requirements-custodian.txt
	$(PYTHON) -m venv bench/.venv-custodian
	bench/.venv-custodian/bin/pip install --quiet --disable-pip-version-check \
	  -r bench/requirements-custodian.txt || echo "Cloud Custodian did not install"
	touch $@

lint: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml

# Two workers (pytest-xdist): the suite takes about half the time on two cores.
test: lint
	$(BIN)/python -m pytest -q -n 2 tests

# The edit-test loop: the pure reading and deciding tests (no moto server, no fuzz, no
# subprocess suites), stopping at the first failure.
quick: $(BIN)/activate
	$(BIN)/python -m pytest -x -q tests/test_reading.py tests/test_deciding.py \
	  tests/test_conditions.py -k "not users_edited_block"

# A standard scanner on template.yaml (checkov, in its own virtualenv: it is large). Each finding
# the template accepts is explained beside the resource, in its Metadata. --skip-download keeps
# it from calling its vendor's platform.
scan: .venv-scan/bin/activate
	.venv-scan/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download

.venv-scan/bin/activate:
	$(PYTHON) -m venv .venv-scan
	.venv-scan/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30
	touch $@

format: $(BIN)/activate
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The deployment zip holds lambda_function.py alone; fixed time stamp and mode make the same
# source give the same bytes. Its name carries __version__ (lambda_function.py, CHANGELOG.md).
VERSION := $(shell sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' lambda_function.py)
# DIST: where the zip and the parameter files are written (the tests give a folder of their own).
DIST ?= dist
ZIP := $(DIST)/sg-guardrail-$(VERSION).zip
$(if $(VERSION),,$(error lambda_function.py has no __version__ = "..." line))
package: $(ZIP)

$(ZIP): lambda_function.py
	mkdir -p $(DIST)
	$(PYTHON) -c 'import sys, zipfile; \
	entry = zipfile.ZipInfo("lambda_function.py", date_time=(1980, 1, 1, 0, 0, 0)); \
	entry.external_attr = 0o644 << 16; entry.compress_type = zipfile.ZIP_DEFLATED; \
	archive = zipfile.ZipFile(sys.argv[1], "w"); \
	archive.writestr(entry, open("lambda_function.py", "rb").read()); archive.close()' $@

# make deploy BUCKET=my-code-bucket [STACK=sg-guardrail] [PARAMETERS=guardrail.json] [PARAMS="DryRun=false ..."]
# PARAMETERS: one JSON file of the template's parameters, read by make deploy and make
# stackset alike (deploy/parameters.example.json); PARAMS are added on top, for this stack only.
# MODE=member deploys a member stack with the same file (where no StackSet reaches). The
# central stack's CentralRegion is the region it is deployed to, unless the file or PARAMS say.
STACK ?= sg-guardrail
PARAMETERS ?=
MODE ?= central
deploy: $(ZIP)
	@test -n "$(BUCKET)" || { echo "usage: make deploy BUCKET=<S3 bucket for the code> [PARAMETERS=file.json] [PARAMS=...]"; exit 2; }
	key=sg-guardrail/$(VERSION)-$$(sha256sum $(ZIP) | cut -c1-16).zip && \
	region=$${AWS_REGION:-$${AWS_DEFAULT_REGION:-$$(aws configure get region 2>/dev/null || true)}} && \
	$(PYTHON) deploy/parameters.py $(MODE) $(if $(filter central,$(MODE)),--region "$$region") \
	  $(if $(PARAMETERS),--file $(PARAMETERS)) \
	  CodeBucket=$(BUCKET) CodeKey=$$key $(PARAMS) > $(DIST)/central-parameters.json && \
	aws s3 cp $(ZIP) s3://$(BUCKET)/$$key && \
	aws cloudformation deploy --template-file template.yaml --stack-name $(STACK) \
	  --s3-bucket $(BUCKET) --s3-prefix sg-guardrail/templates \
	  --capabilities CAPABILITY_NAMED_IAM \
	  --parameter-overrides file://$(DIST)/central-parameters.json

# make stackset PARAMETERS=guardrail.json OUS="ou-ab12-11111111 ou-ab12-22222222" REGIONS="eu-west-1 us-east-1"
#   [CENTRAL_ACCOUNT=111122223333] [STACKSET=sg-guardrail-members] [CALL_AS=SELF|DELEGATED_ADMIN]
# A service-managed StackSet of template.yaml with Mode=member and the same parameter file as
# the central stack, deployed to every account of the OUs in the regions listed, and to each
# account that joins them later (auto-deployment). Run it where StackSets may deploy to the
# organization: the management account, or a delegated administrator with CALL_AS=DELEGATED_ADMIN.
STACKSET ?= sg-guardrail-members
CALL_AS ?= SELF
CENTRAL_ACCOUNT ?=
TEMPLATE_KEY = sg-guardrail/templates/template-$(VERSION)-$(shell sha256sum template.yaml | cut -c1-16).yaml
stackset:
	@test -n "$(PARAMETERS)" -a -n "$(OUS)" -a -n "$(REGIONS)" -a -n "$(BUCKET)" || { echo 'usage: make stackset BUCKET=<S3 bucket> PARAMETERS=file.json OUS="ou-..." REGIONS="eu-west-1 ..." [CENTRAL_ACCOUNT=...]'; exit 2; }
	mkdir -p $(DIST)
	$(PYTHON) deploy/parameters.py member --file $(PARAMETERS) \
	  $(if $(CENTRAL_ACCOUNT),CentralAccountId=$(CENTRAL_ACCOUNT)) > $(DIST)/member-parameters.json
	# The template is over the 51,200 bytes a template body may hold: it goes by S3.
	aws s3 cp template.yaml s3://$(BUCKET)/$(TEMPLATE_KEY)
	if aws cloudformation describe-stack-set --stack-set-name $(STACKSET) --call-as $(CALL_AS) >/dev/null 2>&1; then \
	  aws cloudformation update-stack-set --stack-set-name $(STACKSET) --call-as $(CALL_AS) \
	    --template-url https://$(BUCKET).s3.amazonaws.com/$(TEMPLATE_KEY) --parameters file://$(DIST)/member-parameters.json \
	    --capabilities CAPABILITY_NAMED_IAM \
	    --deployment-targets OrganizationalUnitIds=$(subst $(eval) ,$(comma),$(strip $(OUS))) \
	    --regions $(REGIONS) \
	    --operation-preferences RegionConcurrencyType=PARALLEL,FailureTolerancePercentage=0,MaxConcurrentPercentage=100; \
	else \
	  aws cloudformation create-stack-set --stack-set-name $(STACKSET) --call-as $(CALL_AS) \
	    --description "sg-guardrail member stacks: forwarding rules and the member role" \
	    --template-url https://$(BUCKET).s3.amazonaws.com/$(TEMPLATE_KEY) --parameters file://$(DIST)/member-parameters.json \
	    --capabilities CAPABILITY_NAMED_IAM --permission-model SERVICE_MANAGED \
	    --auto-deployment Enabled=true,RetainStacksOnAccountRemoval=false && \
	  aws cloudformation create-stack-instances --stack-set-name $(STACKSET) --call-as $(CALL_AS) \
	    --deployment-targets OrganizationalUnitIds=$(subst $(eval) ,$(comma),$(strip $(OUS))) \
	    --regions $(REGIONS) \
	    --operation-preferences RegionConcurrencyType=PARALLEL,FailureTolerancePercentage=0,MaxConcurrentPercentage=100; \
	fi

# make smoke VPC=vpc-0123abcd [REGION=eu-west-1] [HOME_REGION=...] [STACK=sg-guardrail]: with
# your own credentials, against the deployed guardrail (python lambda_function.py --smoke).
smoke: $(BIN)/activate
	@test -n "$(VPC)" || { echo "usage: make smoke VPC=vpc-... [REGION=...] [HOME_REGION=...] [STACK=...]"; exit 2; }
	$(BIN)/python lambda_function.py --smoke $(VPC) $(if $(REGION),--region $(REGION)) \
	  $(if $(HOME_REGION),--home-region $(HOME_REGION)) \
	  $(if $(filter command line,$(origin STACK)),--stack $(STACK))

comma := ,

clean:
	rm -rf $(VENV) .venv-scan bench/.venv-custodian .pytest_cache .ruff_cache .hypothesis dist
