import Foundation

/// Anything wrong with an export folder or with what the app feeds the core: a missing or
/// tampered file, a manifest this code does not understand, a preprocessing it does not
/// implement. The message is one line that names the file (where there is one) and what was
/// expected, so an app can show it as is.
public struct EdgeclipException: Error, LocalizedError, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}
