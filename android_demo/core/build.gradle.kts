// edgeclip-core: the plain-JVM glue between an export folder and the app (manifests, tokenizer,
// image preprocessing, zero-shot, benchmark records). The same module as pom.xml, for Android
// Studio; repositories come from ../settings.gradle.kts. Tests need the Python-made fixtures:
//   ./gradlew :core:test -Pedgeclip.fixtures=DIR
// (DIR from: python -m tests.app_fixtures DIR). Without the property the tests fail, saying so.
plugins {
    `java-library`
}

group = "org.edgeclip"
version = "0.1.0"

java {
    // Java 11 bytecode and API: what Android's D8 takes.
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

tasks.withType<JavaCompile>().configureEach {
    options.release.set(11)
    options.encoding = "UTF-8"
}

dependencies {
    // No runtime dependencies. JUnit as in pom.xml.
    testImplementation(platform("org.junit:junit-bom:5.11.4"))
    testImplementation("org.junit.jupiter:junit-jupiter")
    testRuntimeOnly("org.junit.platform:junit-platform-launcher")
}

tasks.test {
    useJUnitPlatform()
    systemProperty("edgeclip.fixtures", providers.gradleProperty("edgeclip.fixtures").getOrElse(""))
}
