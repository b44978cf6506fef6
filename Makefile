# Two commands do everything on a fresh Debian 12 machine:
#   make demo   set up, train on a shipped example, write the upscaled output and a picture
#   make test   set up, then run the whole test suite (pytest + ParaView tests, via ctest)
PY := .venv/bin/python
STSR := .venv/bin/stsr

.PHONY: setup demo test test-debian13 test-long pytest fuzz bench bench-quick bench-between bench-scale bench-learning \
	bench-slabs gpu-check bench-data bench-quality train-side-weights train-prior train-time-refine clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build-configure.log || (cat build-configure.log; exit 1)
	cmake --build build
	ctest --test-dir build --output-on-failure -j $$(nproc)

# Issue 31: make demo and make test on Debian 13 (ParaView 5.13, Python 3.13, numpy 2) in a
# debootstrap root kept in /var/cache/stsr-debian13 (about 8 GB with its venv, reused by later
# runs; ARGS=--clean deletes it); prints ctest's summary. Not part of make test: no set-up
# here (the root installs its own), needs root and the network (docs/tests.md)
test-debian13:
	bash scripts/test-debian13.sh $(ARGS)

pytest: setup
	$(PY) -m pytest -q tests

# make test's checks at full size where it runs a smaller one: upscaling 2.5 GB (129^3 x 73
# steps x 4 variables) with bounded memory (make test: 0.6 GB); minutes
test-long: setup
	STSR_TEST_LONG=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_base_grid.py -k streams

# Issue 19's fuzz tests at length (thousands of cases per reader, --set value and plugin
# property, a new draw each run; make test runs a few hundred, always the same); prints the
# cases tried per reader
fuzz: setup
	$(PY) tests/fuzz_report.py $(ARGS)

bench-quick: setup
	$(PY) -m bench.run --quick

bench: setup
	$(PY) -m bench.run

# Issue 16's real-size benchmark (cases A, B and the cost growth; hours with today's engine):
#   make bench-scale ARGS="--quick"   a smoke run;  ARGS="--cases A --fit-minutes 10" etc.
# Issue 25's benchmark: in-between steps on every dataset, the previous default and each new
# part one at a time (about 45 min on 2 cores; ARGS="--quick" checks the pipeline)
bench-between: setup
	$(PY) -m bench.between $(ARGS)

# Issue 30's series from real solvers (py-pde, PhiFlow, lbmpy in .venv-data, made on first use):
# cached in bench/data, not committed (about 1 GB; 40-60 minutes on 2 cores the first time)
bench-data: setup
	$(PY) -m examples.data.solvers $(ARGS)

# Issue 30's quality benchmark and ablation: every benchmark data set, every row (a set of
# --set overrides; rows the engine lacks are reported as not available), kept steps against
# tricubic, in-between steps against linear in time and today's default (main at 2e1fd8a,
# before issue 30, run as its own row; hours at the
# 5-minute budget; ARGS="--quick" checks the pipeline, ARGS="--datasets wake --rows base,faces")
bench-quality: setup
	$(PY) -m bench.quality --engine-row main@2e1fd8a=2e1fd8a --default main@2e1fd8a $(ARGS)

bench-scale: setup
	$(PY) -m bench.scale $(ARGS)

# Issue 29's benchmark: the slabbed upscale on a 129^3 x 17 tornado against SciPy + VTK in the
# same run, PSNR with and without the compiled lookups, and the cost over output sizes 65^3 to
# 513^3 with the default budget and --max-memory 1GB (about 20 minutes; ARGS="--sizes 65,129")
bench-slabs: setup
	$(PY) -m bench.slab_scale $(ARGS)

# Issue 29's CUDA checks (tests and rates, under 5 minutes) where a GPU is at hand;
# ARGS=cpu runs the same on the CPU
gpu-check: setup
	bash bench/gpu_check.sh $(ARGS)

# Issue 17's benchmark: the learned correction (preset liif) against the base it corrects
# (about 45 minutes on 2 cores; ARGS="--datasets tornado --scales 2 --budgets 2=1" etc.)
bench-learning: setup
	$(PY) -m bench.learning $(ARGS)

# Issue 25's prior weighing the two sides between kept steps: trains and rewrites the
# shipped stsr_core/model/weights/side_weights_v1.pt (+ .json, its provenance) from generated
# series (about 45 minutes on 2 cores, most of it fitting the series' bases once: cached in
# bench/data/side_cache); ARGS="--out /tmp/w.pt" etc. leaves the shipped weights alone
train-side-weights: setup
	$(PY) -m bench.train_side_weights $(ARGS)

# Issue 30's spatial prior: trains and rewrites the shipped
# stsr_core/model/weights/space_prior_v1.pt (+ .json, its provenance) on generated fields
# (examples/data/space_families.py; under 3 hours on 2 cores: the samples once, about 5
# minutes, cached in bench/data/prior_cache, then 2.5 hours of training, checkpointed: a
# rerun resumes); ARGS="--out /tmp/w.pt --hours 0.5" etc. leaves the shipped weights alone
train-prior: setup
	$(PY) -m bench.train_space_prior $(ARGS)

# Issue 30's time refinement network: trains and rewrites the shipped
# stsr_core/model/weights/time_refine_v1.pt (+ .json, its provenance) on generated series
# (examples/data/training_families.py; the series' bases once, about 30 s each on 2 cores,
# cached in bench/data/refine_cache, then the network, checkpointed there: a rerun resumes);
# ARGS="--out /tmp/w.pt --steps 200" etc. leaves the shipped weights alone
train-time-refine: setup
	$(PY) -m bench.train_time_refine $(ARGS)

clean:
	rm -rf build build-configure.log demo-output
