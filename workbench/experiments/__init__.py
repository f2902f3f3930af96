"""Studies: one module per notebook, over shared grid, table and statistics pieces.

========================  ==========================================================================
module                    holds
========================  ==========================================================================
``grid``                  arms, heads-only training on cached tower features, ``run_grid``,
                          ``SuiteRunConfig`` (the method notebooks' shared parameters)
``tables``                mean ± std tables with the baseline difference, their figures
``stats``                 the one seed-spread test every table and scatter uses
``sde``                   ``sde_ablation.ipynb`` (main job) and ``sde_figures.ipynb``
``fanoise``               ``fanoise_figures.ipynb``
``modality_gap``          ``modality_gap.ipynb`` (Mind the Gap, ReAlign)
``dp_ability``            ``dp_ability.ipynb`` (D-ability vs P-ability)
``dcr``, ``dcr_theory``   ``dcr.ipynb`` (DCR: Fig. 1(d), 2, 5, Tab. 4(b), Theorem 1);
                          ``dcr_denoiser`` pretrains the tiny denoiser once
``degla``                 ``degla.ipynb`` (DeGLA Table 7, Figs. 5–6; data in ``degla_data``)
``proclip``               ``proclip.ipynb`` (ProCLIP Tables 5 and 7; data in ``proclip_data``,
                          figures in ``proclip_figures``, the ``"tinyclip"`` recipe in
                          ``tinyclip``)
``token_training``        the short trainer of token methods (CDDS, VSE) on cached tokens
``cdds``                  ``cdds.ipynb`` (CDDS Tables 3–5, plug-in); ``cdds_report`` its tables
``leaderboard``           ``methods_leaderboard.ipynb`` (every method, one budget; run reading and
                          the table in ``leaderboard_runs``, figures in ``leaderboard_figures``,
                          per-row inputs in ``leaderboard_data``, the one scorer in
                          ``leaderboard_scoring``, DCR/CDDS/Earth-Adapter's own data paths in
                          ``leaderboard_paths``)
``revision``              ``revision.ipynb`` (ReVision: text-only projector pretraining, captions)
``revision_runs``         its scoring and the loop over rows × seeds
``revision_report``       its tables, claims, paper numbers and figures
``segtrain``              the segmentation trainer (adapters + head) and per-domain mIoU
``segtrain_config``       its optimisation settings (``SegTraining``: steps, LRs, source loss)
``earth_adapter``         ``earth_adapter.ipynb``: config, data, the runs (``earth_adapter_tables``:
                          DG/DA tables with the spread test, ablation, ρ sweep)
``earth_adapter_figures`` its figures' numbers (frequency parts, router weights, masks)
========================  ==========================================================================

Each new method adds its own study module here. Every public name of every module is available
as ``workbench.experiments.<name>`` (``from workbench import experiments as E``).
"""

from workbench._lazy import lazy_exports

_SUBMODULES = (
    "grid",
    "tables",
    "stats",
    "sde",
    "fanoise",
    "modality_gap",
    "dp_ability",
    "dcr",
    "dcr_theory",
    "dcr_denoiser",
    "degla",
    "proclip",
    "proclip_data",
    "proclip_figures",
    "tinyclip",
    "token_training",
    "cdds",
    "cdds_report",
    "leaderboard",
    "leaderboard_runs",
    "leaderboard_data",
    "leaderboard_figures",
    "leaderboard_scoring",
    "leaderboard_paths",
    "revision",
    "revision_runs",
    "revision_report",
    "segtrain",
    "segtrain_config",
    "earth_adapter",
    "earth_adapter_tables",
    "earth_adapter_figures",
)

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
