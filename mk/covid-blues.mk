# The paper's evaluation on real lung ultrasound: COVID-BLUES (CC BY-NC-ND 4.0, read in place from
# $(BLUES), never copied), A-lines vs B-lines under the `exclusive` label rule, self-supervised
# pretraining on the clips that rule leaves unlabelled, then 5-fold patient cross-validation of
# frozen-feature heads against the scratch baseline and the pixel floor, the label-efficiency
# sweep and fine-tuning; the POCUS collection (Born et al.) as the external centre when it is at
# $(POCUS) (its clip list and labels: docs/covid-blues/pocus-born-labels.csv), or wherever it
# was prepared before. Included from the main Makefile; docs/covid-blues/ holds the committed report.
#
#   make covid-blues           one SSL run of BLUES_STEPS steps on native-resolution frames,
#                              linear probe and sweep
#   make covid-blues-long      the committed report (docs/covid-blues/): frames at 128 px,
#                              LONG_STEPS steps of the default recipe (26 min on 2 cores), linear
#                              and MLP probes, the label-efficiency sweep and fine-tuning
#   make covid-blues-ablation  each recipe change by itself, ABLATION_STEPS steps each
#
# On a GPU build (--features cuda / wgpu) add PRETRAIN_DEVICE=cuda and raise the steps.

BLUES ?= ../shared/data/covid-blues
POCUS ?= ../shared/data/pocus-born
BLUES_RULE ?= exclusive
BLUES_PREP_STRIDE ?= 2
# Empty: frames keep their resolution (exact path); a number scales them down at preparation.
BLUES_MAX_SIDE ?=
BLUES_EVAL_STRIDE ?= 2
BLUES_SEEDS ?= 0,1,2
BLUES_FOLDS ?= 5
BLUES_CONFIG ?= configs/covid-blues/crops-anywhere.toml
BLUES_STEPS ?= 1500
LONG_STEPS ?= 1500
ABLATION_STEPS ?= 1500
ABLATION_CONFIGS ?= paper temporal crops crops-anywhere lus
BLUES_FINETUNE_STEPS ?= 200
PRETRAIN_DEVICE ?= cpu
BLUES_TRAIN := $(RELEASE)/pleura-train

.PHONY: covid-blues covid-blues-long covid-blues-ablation

# $(call blues_data,OUT): labels under the rule, prepared local and external datasets. Local
# frames keep their resolution (the exact preprocessing path); the external clips, up to
# 1080 px, are stored at 384 px at most.
define blues_data
	@test -f $(BLUES)/severity.csv || { echo "error: COVID-BLUES not found at $(BLUES) (set BLUES=...)"; exit 2; }
	mkdir -p $(1)
	$(BLUES_TRAIN) adapt covid-blues --root $(BLUES) --out $(1)/labels.csv --lines-rule $(BLUES_RULE)
	$(BLUES_TRAIN) prepare --clips $(BLUES)/lus_videos --labels $(1)/labels.csv --out $(1)/data \
		--stride $(BLUES_PREP_STRIDE) $(if $(BLUES_MAX_SIDE),--max-side $(BLUES_MAX_SIDE)) --folds $(BLUES_FOLDS) --seed 0
	if [ -f $(POCUS)/labels.csv ]; then \
		$(BLUES_TRAIN) prepare --clips $(POCUS)/clips --labels $(POCUS)/labels.csv --out $(1)/pocus \
			--stride $(BLUES_PREP_STRIDE) --max-side $(or $(BLUES_MAX_SIDE),384) --seed 0; \
	else echo "note: no external set at $(POCUS) (POCUS=...): local cross-validation only"; fi
endef

# $(call blues_pretrain,OUT,RUN,CONFIG,STEPS): one pretraining run, skipped when already done.
define blues_pretrain
	test -f $(1)/$(2)/DONE || $(BLUES_TRAIN) pretrain --data $(1)/data --out $(1)/$(2) \
		--config $(3) --steps $(4) --seed 0 --device $(PRETRAIN_DEVICE)
endef

# Evaluation options shared by every experiment of OUT ($(1)), with seeds $(2) (BLUES_SEEDS when
# empty); the external centre whenever it was prepared there.
blues_eval = --data $(1)/data --stride $(BLUES_EVAL_STRIDE) --folds $(BLUES_FOLDS) \
	--baseline pixels --seeds $(or $(2),$(BLUES_SEEDS)) $(if $(wildcard $(1)/pocus/dataset.json),--external pocus=$(1)/pocus)

BLUES_OUT := target/covid-blues
covid-blues: build
	$(call blues_data,$(BLUES_OUT))
	$(call blues_pretrain,$(BLUES_OUT),pretrain,$(BLUES_CONFIG),$(BLUES_STEPS))
	$(BLUES_TRAIN) probe $(call blues_eval,$(BLUES_OUT)) --backbone $(BLUES_OUT)/pretrain \
		--head linear --out $(BLUES_OUT)/probe-linear
	$(BLUES_TRAIN) sweep $(call blues_eval,$(BLUES_OUT)) --backbone $(BLUES_OUT)/pretrain \
		--head linear --out $(BLUES_OUT)/sweep
	@echo "reports: $(BLUES_OUT)/probe-linear/summary.md, $(BLUES_OUT)/sweep/summary.md"

BLUES_LONG := target/covid-blues-long
BLUES_REPORT ?= docs/covid-blues
# Frames stored at 128 px like the ablation's, whose `crops-anywhere` run is this pretraining.
covid-blues-long: BLUES_MAX_SIDE = 128
covid-blues-long: build
	$(call blues_data,$(BLUES_LONG))
	$(call blues_pretrain,$(BLUES_LONG),pretrain,$(BLUES_CONFIG),$(LONG_STEPS))
	$(BLUES_TRAIN) probe $(call blues_eval,$(BLUES_LONG)) --backbone $(BLUES_LONG)/pretrain \
		--head linear --out $(BLUES_LONG)/probe-linear
	$(BLUES_TRAIN) probe $(call blues_eval,$(BLUES_LONG)) --backbone $(BLUES_LONG)/pretrain \
		--head mlp --out $(BLUES_LONG)/probe-mlp
	$(BLUES_TRAIN) sweep $(call blues_eval,$(BLUES_LONG)) --backbone $(BLUES_LONG)/pretrain \
		--head linear --out $(BLUES_LONG)/sweep
	$(BLUES_TRAIN) finetune $(call blues_eval,$(BLUES_LONG),0) --backbone $(BLUES_LONG)/pretrain \
		--head linear --finetune-steps $(BLUES_FINETUNE_STEPS) --out $(BLUES_LONG)/finetune
	OUT=$(BLUES_LONG) REPORT=$(BLUES_REPORT) TARGET=covid-blues-long BLUES=$(BLUES) POCUS=$(POCUS) \
		tools/covid_blues_report.sh probe-linear probe-mlp sweep finetune

BLUES_ABLATION := target/covid-blues-ablation
# The ablation was measured on frames stored at 128 px (smaller, faster to load).
covid-blues-ablation: BLUES_MAX_SIDE = 128
covid-blues-ablation: build
	$(call blues_data,$(BLUES_ABLATION))
	for c in $(ABLATION_CONFIGS); do \
		test -f $(BLUES_ABLATION)/pretrain-$$c/DONE || $(BLUES_TRAIN) pretrain --data $(BLUES_ABLATION)/data \
			--out $(BLUES_ABLATION)/pretrain-$$c --config configs/covid-blues/$$c.toml \
			--steps $(ABLATION_STEPS) --seed 0 --device $(PRETRAIN_DEVICE) || exit 1; done
	$(BLUES_TRAIN) probe $(call blues_eval,$(BLUES_ABLATION)) --head linear \
		$(foreach c,$(ABLATION_CONFIGS),--backbone $(BLUES_ABLATION)/pretrain-$(c)) --out $(BLUES_ABLATION)/probe-linear
	OUT=$(BLUES_ABLATION) REPORT=$(BLUES_REPORT)/ablation TARGET=covid-blues-ablation BLUES=$(BLUES) POCUS=$(POCUS) \
		tools/covid_blues_report.sh probe-linear
