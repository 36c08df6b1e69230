"""The paper's mixture-of-Gaussians study: precision rises and recall falls as the teacher is sharpened.

Usage (defaults: the notebook's fits, a K'=4 teacher on n=100 samples of p*, K''=1 students, selectivities
1 2 5 10 100 inf, 100 seeds):

    python recipes/gmm_simulation.py --output-dir docs/figures
    python recipes/gmm_simulation.py --num-seeds 5 --selectivities 1 10 inf --teacher-components 6

Prints a table (mean with a 95 % percentile-bootstrap interval over seeds, and the median) and writes
gmm_simulation.{json,csv,png} to --output-dir.
Same as `hf-kd simulate`.
"""

from hf_kd.simulation import main

if __name__ == "__main__":
    main()
