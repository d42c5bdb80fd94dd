"""``anomaly bench``: our detectors against anomalib's, same images, same machine, one run.

For every MVTec-layout category under a root, each of our models (PatchCore, PaDiM) is
fitted and scored beside anomalib's counterpart (when anomalib is installed: ``pip
install .[peer]``, or a venv at ``.venv-peer``), with the same EfficientNet-Lite0
ImageNet weights in the same timm backbone, the same stages, input size and
normalisation, in two comparisons: ``matched`` (same model settings) and ``defaults``
(each side's own). On request (``--models ganomaly skip-ganomaly``) our GANs are compared
with anomalib's GANomaly the same way (same images, input size and epoch budget). Models
with no counterpart in anomalib (the classical ``difference`` and ``gmm``) run alone, with
their defaults (one ``defaults`` case per set). Every
case runs once per seed (``--seeds``, default 0 1 2) on both sides. See
:mod:`anomaly.bench.protocol` for the settings and the seeded
sub-sampling, :mod:`anomaly.bench.run` for the timing protocol, and
:mod:`anomaly.bench.peer_anomalib` for exactly what is run and timed on anomalib's side.

Outputs in ``--out DIR``:

* ``bench.json``, keys:

  - ``schema`` (``"anomaly-bench/2"``; version 1 had pass/fail ``checks`` and
    ``image_auroc_difference`` instead of ``differences``), ``complete`` (false while
    running or when cut short), ``command``, ``started``, ``finished``, ``wall_seconds``;
  - ``machine``: ``cpu_count``, ``usable_cores``, ``cpu_model``, ``memory_gb``,
    ``platform``, ``python``, ``load_average`` (at start), ``load_average_end``;
  - ``commit``: ``sha``, ``dirty``;
  - ``packages``: ``ours`` and ``peer``, each ``{distribution: version}``;
  - ``peer``: ``name``, ``python``, ``available``, ``reason`` (why not, when not),
    ``version``, ``torch_threads``;
  - ``protocol``: ``models``, ``settings``, ``categories``, ``max_train``, ``max_test``, ``seeds``,
    ``replicates`` (how the seeds' figures are combined), ``image_size``, ``matched_coreset_ratio``, ``peer_defaults_max_patches``,
    ``gan_image_size``, ``gan_epochs``,
    ``differences`` (``figures``: how each compared figure is compared, ``level``,
    ``resamples``, ``seed``), ``warmup_calls``, ``subsampling``, ``timing``, ``scores``,
    ``peer_coreset_malloc``, ``pythons`` {``ours``, ``peer``};
  - ``backbone_check``: ``backbone``, ``layers``, ``peer_layers``, ``image``,
    ``max_abs_diff`` and ``max_rel_diff`` (per layer; the relative one decides
    ``identical``), ``identical``, ``tolerance``, ``weights_sha256``, ``mean``, ``std`` (``null`` without the peer, or with GANs only);
  - ``results``: one per category, model and setting, with ``category``, ``dataset``,
    ``model``, ``setting``, ``seeds``, ``n_train_total``, ``n_fit``, ``n_test_total``, ``n_test``,
    ``n_test_defective``, ``notes``, ``ours`` and ``peer`` (figures, ``peer`` ``null``
    when not run), ``peer_skipped`` (why), ``ratios``, ``test_sets`` (per
    seed: ``seed``, ``images`` relative to the set, ``labels``), ``differences`` (see
    below; ``null`` without a peer) and ``failed``
    (``null``, or ``system``, ``op``, ``seed``, ``error`` where our detector refused a
    seed's training images with a typed error, such as images it cannot align: the case
    then has no figures and the run goes on);
  - figures (``ours``, ``peer``): ``image_auroc``, ``pixel_auroc``, ``aupro`` (means over
    the seeds), ``image_auroc_std``, ``pixel_auroc_std``, ``aupro_std`` (their sample
    standard deviations, ``null`` for one seed), ``replicates`` (per seed: ``seed``,
    ``image_auroc``, ``pixel_auroc``, ``aupro``, ``fit_seconds``, ``latency_p50_ms``,
    ``peak_rss_mb``, ``scores``: the raw image scores in ``test_sets`` order, ``null`` for
    an image refused, ``e2e_ms`` and ``model_ms``: per-image timings in the same order,
    ``n_refused``, ``n_refused_good``), ``n_refused`` and
    ``n_refused_good`` (test images, summed over the seeds, that our detector could not
    align to its template: the service's ``ALIGNMENT_FAILED`` verdict, a rejected part,
    so they rank above every scored image in the image AUROC and have no map), ``pixel_metrics_note``, ``fit_seconds`` (median over the seeds) (model already built and its weights
    loaded, on both sides), ``model_load_seconds``, ``latency_ms`` {``p50``, ``p90``} (end to
    end from the file), ``model_ms`` {``p50``, ``p90``} (the model call), ``decode_ms_p50``,
    ``preprocess_ms_p50`` (peer), ``backbone_ms_p50``, ``latency_over_backbone``,
    ``peak_rss_mb``, ``fit_peak_rss_mb``, ``import_rss_mb``, ``peak_anon_mb``,
    ``fit_peak_anon_mb``, ``import_anon_mb`` (anonymous memory only, see
    :class:`anomaly.bench.worker.AnonPeak`), ``bundle_mb``,
    ``bundle_backbone_mb``, ``bundle_holds_backbone``, ``torch_threads``, ``params``,
    ``backbone``, ``training``; a peer run reused from another setting adds ``shared_with``;
  - ``ratios`` (ours / peer): ``fit_seconds``, ``latency_p50``, ``latency_p90``,
    ``model_p50``, ``model_p90``, ``backbone_p50``, ``peak_rss_mb``, ``peak_anon_mb``,
    ``bundle_mb``; and
    differences ours - peer: ``image_auroc_delta``, ``pixel_auroc_delta``, ``aupro_delta``;
  - ``differences`` (:mod:`anomaly.bench.compare`): ``image_auroc``, ``pixel_auroc``,
    ``aupro`` (ours - peer), ``latency_p50``, ``model_p50`` (ours / peer of the pooled
    medians), ``fit_seconds``, ``peak_rss_mb`` (ours / peer), each ``null`` or
    ``value``, ``images`` (``low``, ``high``, ``level``, ``resamples``: a paired bootstrap
    interval over each seed's test images, for image AUROC and the latencies; else
    ``null``) and ``seeds`` (the per-seed values, ``values``, ``mean``, ``sd``, ``min``,
    ``max``). Figures with their uncertainty: the bench judges nothing;
  - ``summary``: ``wall_seconds``, ``cases``, ``cases_compared``, ``fits_refused``.

* ``bench.md``: the same as Markdown tables (one per setting, cells ``ours / anomalib``
  with the ratio), the paired differences with their intervals and seed spreads, each
  seed's image AUROC and the latency floor table.
* ``accuracy.png``: image AUROC, pixel AUROC and AUPRO per case, ours beside anomalib.
* ``latency.png``: end-to-end latency p50 (with our backbone's forward marked), model
  call p50 and fit time per case.
* ``logs/``: every worker's standard error.
"""

from anomaly.bench.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
