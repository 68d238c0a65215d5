//! The demo students and grades that an empty store can be seeded with,
//! the same for every engine.

use crate::model::grading::GradeType;

/// Microseconds in an hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;
/// Microseconds in a day.
pub const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// The demo students: first name, last name, grades (title, type, score).
pub type DemoStudent = (
    &'static str,
    &'static str,
    &'static [(&'static str, GradeType, f64)],
);

/// What [`super::GradeStore::seed_demo_data`] adds.
pub const DEMO_STUDENTS: &[DemoStudent] = &[
    (
        "Amara",
        "Okafor",
        &[
            ("Fractions quiz", GradeType::Quiz, 92.0),
            ("Reading log, week 1", GradeType::Homework, 100.0),
            ("Chapter 3 test", GradeType::Test, 88.5),
            ("Midterm exam", GradeType::Exam, 84.0),
        ],
    ),
    (
        "Lucas",
        "Martin",
        &[
            ("Fractions quiz", GradeType::Quiz, 71.0),
            ("Chapter 3 test", GradeType::Test, 64.5),
            ("Midterm exam", GradeType::Exam, 77.0),
        ],
    ),
    (
        "Sofía",
        "García",
        &[
            ("Fractions quiz", GradeType::Quiz, 85.0),
            ("Reading log, week 1", GradeType::Homework, 95.0),
            ("Chapter 3 test", GradeType::Test, 91.0),
            ("Lab report: plant growth", GradeType::Homework, 89.5),
            ("Midterm exam", GradeType::Exam, 93.0),
        ],
    ),
    (
        "Kenji",
        "Watanabe",
        &[
            ("Fractions quiz", GradeType::Quiz, 98.0),
            ("Chapter 3 test", GradeType::Test, 95.5),
            ("Lab report: plant growth", GradeType::Homework, 82.0),
            ("Midterm exam", GradeType::Exam, 97.0),
        ],
    ),
    (
        "Emma",
        "Schmidt",
        &[
            ("Reading log, week 1", GradeType::Homework, 60.0),
            ("Fractions quiz", GradeType::Quiz, 55.5),
            ("Chapter 3 test", GradeType::Test, 68.0),
        ],
    ),
    (
        "Noah",
        "O'Brien",
        &[
            ("Fractions quiz", GradeType::Quiz, 79.0),
            ("Reading log, week 1", GradeType::Homework, 90.0),
            ("Chapter 3 test", GradeType::Test, 74.5),
            ("Lab report: plant growth", GradeType::Homework, 86.0),
            ("Midterm exam", GradeType::Exam, 81.0),
        ],
    ),
];
