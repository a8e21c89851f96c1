"""The paper's studies on top of the engine: the design ablation (Table 1), the schedule search (Figures 2 and 7),
published figures as baselines, and which patches each token holds."""
