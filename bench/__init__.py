"""``make bench``: speed ratios and public-data accuracy of kit, written to bench/results/ and BENCHMARKS.md.

Run as ``python -m bench [--quick] [--only P1,P2,...]`` from the repository root. One module per section:

- **P1** (:mod:`bench.p1`, its records build in :mod:`bench.p1_build`) records build images/s over ``cores x``
  a single-process OpenCV loop doing the same decode + resize + encode on the same files (goal >= 0.8), and the
  peak RSS of the whole process tree of a build (spawn pool included) at several N (goal < 1.5 GiB, flat as N grows).
- **P2** (:mod:`bench.p2`) kit's training input pipeline (records + flip + color jitter + CutMix, batch 64) over the
  ``ImageDataGenerator.flow_from_directory`` way (goal >= 5x).
- **P3** (:mod:`bench.p3`) the same over ``keras.utils.image_dataset_from_directory`` + the Keras augmentation
  layers (goal >= 2x). What P2 and P3 share is in :mod:`bench.pipelines`.
- **P4** (:mod:`bench.p4`) ``kit train`` images/s over a bare ``model.fit`` on in-memory tensors, ResNet20 at 32 px
  (goal >= 0.95).
- **JITTER** (:mod:`bench.jitter`) keras.layers.RandomColorJitter against kit's vectorised jitter at 224 px,
  batch 32 (information).
- **ACC** (:mod:`bench.acc`) Fashion-MNIST test accuracy of ResNet20 / CNN / LSTM trained with kit's defaults.
- **T** (:mod:`bench.time_to_accuracy`) time to accuracy: E = one bare ``model.fit`` epoch of ResNet20
  over the same training images in the same run; T1 resnet20, T2 cnn, T4 the fastest scratch preset
  (``--t-fast-model``, default resnet9) trained with kit's train entry point, test accuracy and wall time in
  minutes and in E against the goals; T3 ``kit demo``; a plot of test accuracy against wall-clock minutes.
- **P1-JPEG** (:mod:`bench.p1_jpeg`) records from >= 5,000 generated JPEGs of the AI-vs-human size mix to 64, 224
  and 380 px over ``cores`` naive full-decode OpenCV loops (goal >= 2x at 64 and 224 px), with the PSNR of kit's
  reduced-scale decode against the full decode (goal >= 38 dB).
- **P2-380** (:mod:`bench.p2_380`) the online pipeline at 380 px (records -> flip + colour jitter + CutMix, batch 32),
  goal >= 1,000 img/s, also at 224 px, PNG and JPEG records, stage by stage, and the jitter kernel before/after.
- **GPU** (:mod:`bench.gpu`, its measurements in :mod:`bench.gpu_items`; ``make gpu-check``) what only a GPU measures,
  in under 8 minutes: float16 and XLA on/off step times of EfficientNetB4 at 380 px and EfficientNetV2-B0 at 224 px,
  kit's pipeline from records against a batch held in memory, the ColorJitter layer on the GPU, MirroredStrategy and
  ``kit demo``; saved item by item under a time budget. Without a GPU it says so and writes nothing.
- **D-TRACE**, **D-RECORDS** (:mod:`bench.detection`, the generated task in :mod:`bench.trace_task`) AI-image
  detection: a generated 512-768 px task whose "AI" class carries only an upsampling trace, stretch against crop,
  crop + stride-1 stem and crop + residual/spectrum inputs at the same compute (PASS: crops beat stretch beyond noise);
  records at native size (crop, max_side 768) against stretched: build img/s, disk MB, pipeline img/s at 224 and 380 px.
- **D-CIFAKE** (:mod:`bench.cifake`) CIFAKE's quick baseline (``comp=cifake model=resnet9``), then each detection
  option on or off: test accuracy on the 20,000 test images and wall time in E (goal >= 98.0 % within 10 E). The data
  comes from ``--cifake-dir`` or ``KIT_CIFAKE_DIR``; without it the section says how to get it and writes nothing.

Why ratios: the 2 CPU cores this runs on are shared, so absolute images/s drift by tens of percent from one
minute to the next. Each speed figure is kit against its baseline measured side by side, in alternating
rounds, in the same run on the same files, so most of that drift cancels.

Results: one JSON per section under ``bench/results/`` (``bench/results/quick/`` with ``--quick``, which never
touches the full results), PNGs beside them, and BENCHMARKS.md rendered from every JSON present, full results
first and quick ones clearly labelled (:mod:`bench.report`). Work files (generated images, records, runs) go to
``bench/work/``. :mod:`bench.common` holds what several sections share: sizes, machine info, synthetic images,
competition YAMLs and the epoch clock.

Module top levels import the standard library and numpy only, as the single script did: P1 times and measures
processes that import them (``python -m bench --p1-child`` runs each records build; its loop pool's workers import
:mod:`bench.p1`), so heavier imports there would add to the start-up and memory P1 reports.
"""
