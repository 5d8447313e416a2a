//! Confident learning: thresholds, confident joint, label issues and label quality scores.
